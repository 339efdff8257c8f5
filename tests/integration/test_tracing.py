"""Tracing through the real process (issue 19): `authz serve --otlp-endpoint` exporting to a
real OTLP/HTTP receiver on loopback (tests/support/otlp.py).

Every wait is bounded polling; every process is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from tests.integration.test_operations import BOUND, HOST, ISSUER, Service, write_policies
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.tokens import claims, jwks_json, make_key

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET_COOKIE = "session=cookie-secret-4711"
SECRET_API_KEY = "api-key-secret-0815"
SECRET_QUERY = "query-secret-1234"


def check(
    service: Service,
    path: str,
    headers: dict[str, str] | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.id = "GET", HOST, path, "req-trace"
    for name, value in {
        ":method": "GET",
        ":authority": HOST,
        ":path": path,
        **(headers or {}),
    }.items():
        http.headers[name] = value
    with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        return stub.Check(message, timeout=10, metadata=metadata)


def serve(tmp_path: Path, endpoint: str, *extra: str) -> tuple[Service, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = make_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    write_policies(tmp_path / "policies", jwks)
    service = Service.on_loopback(
        tmp_path / "policies", tmp_path / "serve.log", "--otlp-endpoint", endpoint, *extra
    ).start()
    return service, key


def _ready(service: Service) -> int:
    try:
        return service.get("/readyz")[0]
    except OSError:
        return 0


def checks_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == "authz.check"]


def test_a_check_is_a_span_in_the_callers_trace_without_secrets(tmp_path: Path) -> None:
    with OtlpReceiver() as collector:
        service, key = serve(
            tmp_path,
            collector.endpoint,
            "--service-name",
            "authz-test",
            "--resource-attribute",
            "deployment.environment=ci",
        )
        try:
            token = key.sign(claims(ISSUER, now=time.time(), audience="shop", subject="alice"))
            secrets = {
                "authorization": f"Bearer {token}",
                "cookie": SECRET_COOKIE,
                "x-api-key": SECRET_API_KEY,
                "traceparent": TRACEPARENT,
                "tracestate": "vendor=opaque",
            }
            path = f"/api/orders?access_token={SECRET_QUERY}"
            cold = check(service, path, secrets)
            warm = check(service, path, secrets)
            assert cold.status.code == warm.status.code == 0
            denied = check(service, "/admin", {"traceparent": TRACEPARENT})
            assert denied.status.code != 0
            spans = collector.wait_for(lambda spans: len(checks_of(spans)) >= 3)
        finally:
            assert service.stop() == 0

    first, second, third = sorted(checks_of(spans), key=lambda s: s.start_ns)
    for span in (first, second, third):
        assert span.trace_id == TRACE_ID
        assert span.parent_span_id == PARENT_ID
        assert span.kind == 2  # SPAN_KIND_SERVER
        assert span.resource["service.name"] == "authz-test"
        assert span.resource["deployment.environment"] == "ci"
        assert span.resource["service.instance.id"]
        assert span.end_ns > span.start_ns
    assert first.attributes["authz.decision"] == "allow"
    assert first.attributes["authz.status"] == 200
    assert first.attributes["authz.reason"] == "users"
    assert first.attributes["authz.rule"] == "users"
    assert first.attributes["http.request.method"] == "GET"
    assert first.attributes["server.address"] == HOST
    assert first.attributes["url.path"] == "/api/orders"
    assert first.attributes["authz.policy_revision"]
    assert first.attributes["authz.decision_id"] != second.attributes["authz.decision_id"]
    assert first.attributes["authz.token"] == "verified"
    assert second.attributes["authz.token"] == "cached"
    assert third.attributes["authz.decision"] == "deny"
    assert third.attributes["authz.reason"] == "no-admin"
    assert "authz.token" not in third.attributes

    # The cold verification is a child of its check; the cached one has none.
    verifications = [s for s in spans if s.name == "authz.jwt_verify"]
    assert [v.parent_span_id for v in verifications] == [first.span_id]
    assert verifications[0].trace_id == TRACE_ID
    assert first.start_ns <= verifications[0].start_ns <= verifications[0].end_ns <= first.end_ns

    # The JWKS load is a root span of its own.
    fetches = [s for s in spans if s.name == "authz.jwks_fetch"]
    assert fetches and all(f.parent_span_id == "" for f in fetches)
    assert fetches[0].attributes["authz.issuer"] == ISSUER

    # Nothing that left the process carries a credential or the query string.
    sent = b"".join(collector.bodies)
    for secret in (token, token.split(".")[2], "cookie-secret-4711", SECRET_API_KEY, SECRET_QUERY):
        assert secret.encode() not in sent


def test_the_parent_from_envoys_grpc_metadata_wins_and_b3_is_read(tmp_path: Path) -> None:
    envoy_trace, envoy_span = "a" * 32, "b" * 16
    b3_trace, b3_span = "c" * 32, "d" * 16
    with OtlpReceiver() as collector:
        service, _ = serve(tmp_path, collector.endpoint)
        try:
            # Envoy's ext_authz client puts its span in the call's metadata; the request's own
            # headers hold the client's context, which is only the fallback.
            check(
                service,
                "/public/a",
                {"traceparent": TRACEPARENT},
                metadata=(("traceparent", f"00-{envoy_trace}-{envoy_span}-01"),),
            )
            check(
                service,
                "/public/b",
                {"x-b3-traceid": b3_trace, "x-b3-spanid": b3_span, "x-b3-sampled": "1"},
            )
            check(service, "/public/c", {"b3": f"{b3_trace}-{'e' * 16}-1"})
            spans = collector.wait_for(lambda spans: len(checks_of(spans)) >= 3)
        finally:
            assert service.stop() == 0
    by_path = {s.attributes["url.path"]: s for s in checks_of(spans)}
    assert (by_path["/public/a"].trace_id, by_path["/public/a"].parent_span_id) == (
        envoy_trace,
        envoy_span,
    )
    assert (by_path["/public/b"].trace_id, by_path["/public/b"].parent_span_id) == (
        b3_trace,
        b3_span,
    )
    assert (by_path["/public/c"].trace_id, by_path["/public/c"].parent_span_id) == (
        b3_trace,
        "e" * 16,
    )


def test_sampling_follows_the_parent_and_the_ratio(tmp_path: Path) -> None:
    unsampled = f"00-{'1' * 32}-{'2' * 16}-00"
    with OtlpReceiver() as collector:
        service, _ = serve(tmp_path, collector.endpoint)  # the default ratio: 0
        try:
            for i in range(20):
                check(service, f"/public/none-{i}")  # no context: no trace at ratio 0
                check(service, f"/public/unsampled-{i}", {"traceparent": unsampled})
            check(service, "/public/marker", {"traceparent": TRACEPARENT})
            spans = collector.wait_for(lambda spans: len(checks_of(spans)) >= 1)
            # Later exports would carry the others: wait for the process to flush at exit.
        finally:
            assert service.stop() == 0
    spans = collector.spans
    assert [s.attributes["url.path"] for s in checks_of(spans)] == ["/public/marker"]

    with OtlpReceiver() as collector:
        service, _ = serve(tmp_path / "again", collector.endpoint, "--trace-sample-ratio", "1")
        try:
            check(service, "/public/root")
            check(service, "/public/unsampled", {"traceparent": unsampled})
            collector.wait_for(lambda spans: len(checks_of(spans)) >= 1)
        finally:
            assert service.stop() == 0
    roots = checks_of(collector.spans)
    assert [s.attributes["url.path"] for s in roots] == ["/public/root"]
    assert roots[0].parent_span_id == ""


def test_a_collector_that_is_down_is_logged_once_and_checks_go_on(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    service, _ = serve(tmp_path, down, "--trace-sample-ratio", "1")
    try:
        for i in range(30):
            assert check(service, f"/public/{i}").status.code == 0
        deadline = time.monotonic() + BOUND
        while "cannot export traces" not in service.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        # More batches fail after the first report (one per second): still one line.
        time.sleep(2.5)
        for i in range(30):
            assert check(service, f"/public/more-{i}").status.code == 0
        assert service.metrics()[("authz_trace_spans_dropped_total", ())] == 0
    finally:
        assert service.stop() == 0
    log = service.stderr()
    assert log.count("cannot export traces") == 1, log
    assert "Traceback" not in log
    assert "Connection refused" in log  # the cause, in our one line
    assert " opentelemetry." not in log  # the SDK's per-batch lines are taken


def test_each_worker_exports_on_its_own(tmp_path: Path) -> None:
    with OtlpReceiver() as collector:
        service, _ = serve(tmp_path, collector.endpoint, "--workers", "2")
        try:
            worker_1 = Service([], tmp_path / "unused.log")
            worker_1.grpc_port, worker_1.admin_port = service.grpc_port + 1, service.admin_port + 1
            deadline = time.monotonic() + BOUND
            while _ready(worker_1) != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            for target in (service, worker_1):
                check(target, "/public/w", {"traceparent": TRACEPARENT})
            spans = collector.wait_for(lambda spans: len(checks_of(spans)) >= 2)
        finally:
            assert service.stop() == 0
    resources = [s.resource for s in checks_of(spans)]
    assert sorted(r["authz.worker"] for r in resources) == [0, 1]
    assert len({r["service.instance.id"] for r in resources}) == 2
    assert len({r["process.pid"] for r in resources}) == 2
