"""Metrics and readiness of the real process, read as Prometheus and Kubernetes read them.

`python -m authz serve` runs with --admin on loopback; /metrics is parsed with
prometheus_client's text parser (what promtool checks), gRPC health is asked over real gRPC.
Every wait is bounded polling; the process is always stopped.
"""

from __future__ import annotations

import json
import platform
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.server import AUTHORIZATION_SERVICE
from tests.integration.test_operations import BOUND, HOST, ISSUER, Service, status_of
from tests.support.jwks_server import JwksServer
from tests.support.ports import free_port
from tests.support.tokens import claims, jwks_json, make_key

CHECK = (("grpc_method", "Check"), ("grpc_service", AUTHORIZATION_SERVICE), ("grpc_type", "unary"))


def policy(directory: Path, key_source: str, rules: int = 3) -> None:
    directory.mkdir()
    many = "".join(
        f"  - {{name: extra-{i}, action: allow, to: [{{paths: [/x{i}]}}]}}\n"
        for i in range(rules - 3)
    )
    (directory / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        hosts: [{HOST}]
        authentication:
          jwt:
            - issuer: {ISSUER}
              audiences: [shop]
              {key_source}
        rules:
          - {{name: no-admin, action: deny, to: [{{paths: [/admin]}}]}}
          - {{name: public, action: allow, to: [{{paths: ["/public/{{**}}"]}}]}}
          - name: users
            action: allow
            from: [{{issuers: ["{ISSUER}"]}}]
            to: [{{paths: ["/api/{{**}}"]}}]
        """)
        + many,
        encoding="utf-8",
    )


def families(service: Service) -> dict[str, Any]:
    status, body = service.get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(found: dict[str, Any], sample: str, **labels: str) -> float | None:
    for family in found.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def test_metrics_as_prometheus_reads_them(tmp_path: Path) -> None:
    key = make_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    # 203 rules: every one that decides a check must not become its own series.
    policy(tmp_path / "policies", f"jwks_file: {jwks}", rules=203)
    started = time.time()
    service = Service.on_loopback(
        tmp_path / "policies", tmp_path / "stderr.log", "--no-watch"
    ).start()
    try:
        token = key.sign(claims(ISSUER, now=time.time(), audience="shop"))
        answers = [service.check(f"/x{i}") for i in range(200)]
        answers += [
            service.check("/admin"),
            service.check("/api/a", {"authorization": f"Bearer {token}"}),
            service.check("/nothing"),
        ]
        assert [status_of(a) for a in answers[-4:]] == [200, 403, 200, 403]
        found = families(service)
        raw = service.get("/metrics")[1].decode()
    finally:
        assert service.stop() == 0, service.stderr()[-2000:]

    # No `_created` twin for any counter or histogram.
    assert "_created" not in raw
    # The standard process and platform collectors.
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info"):
        assert name in found, name
    (build,) = found["authz_build_info"].samples
    assert build.labels["python"] == platform.python_version()
    assert build.labels["grpc"] == grpc.__version__ and build.labels["version"]
    # Reloaded (here: loaded at start) successfully, when.
    loaded = value(found, "authz_policy_last_reload_success_timestamp_seconds")
    assert loaded is not None and started <= loaded <= time.time()
    # The provider's keys: ready, and how old.
    assert value(found, "authz_jwks_state", issuer=ISSUER, state="ready") == 1
    assert value(found, "authz_jwks_state", issuer=ISSUER, state="unavailable") == 0
    age = value(found, "authz_jwks_key_set_age_seconds", issuer=ISSUER)
    assert age is not None and 0 <= age <= time.time() - started
    # go-grpc-prometheus's names and labels, for every Check answered.
    checks = len(answers)
    assert value(found, "grpc_server_handled_total", **dict(CHECK), grpc_code="OK") == checks
    assert value(found, "grpc_server_handling_seconds_count", **dict(CHECK)) == checks
    assert found["grpc_server_handling_seconds"].type == "histogram"
    # 200 rules allowed 200 checks: one series, labelled `rule`, not 200.
    reasons = {
        (s.labels["decision"], s.labels["reason"]): s.value for s in found["authz_checks"].samples
    }
    assert reasons == {
        ("allow", "rule"): 201,
        ("deny", "rule"): 1,
        ("deny", "no_matching_rule"): 1,
    }


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(answer.status)


def test_readiness_is_one_truth_with_the_identity_provider_down(tmp_path: Path) -> None:
    """JWKS down at start: while the key grace runs, gRPC health and /readyz both say not ready
    (starting, not draining); after it both say ready, and the stale provider is named in
    /readyz, a metric and a log line; mTLS/public routes are served, its tokens refused."""
    with JwksServer() as idp:
        idp.fail(503)
        policy(tmp_path / "policies", f"jwks_uri: {idp.jwks_uri}")
        service = Service.on_loopback(tmp_path / "policies", tmp_path / "stderr.log", "--no-watch")
        service.grpc_port, service.admin_port = free_port(), free_port()
        service.process = service.launch()
        try:
            deadline = time.monotonic() + BOUND
            while True:  # the admin endpoint answers from the first moment
                assert service.process.poll() is None, service.stderr()[-2000:]
                try:
                    status, body = service.get("/readyz")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the admin endpoint never answered"
                    time.sleep(0.05)
            assert status == 503
            starting = json.loads(body)
            assert starting["ready"] is False and starting["phase"] == "starting"
            assert "draining" not in json.dumps(starting)
            assert idp.wait_for_fetches(1)
            assert health_status(service.grpc_port) != health_pb2.HealthCheckResponse.SERVING

            # After the grace (10 s): both ready, together.
            while health_status(service.grpc_port) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline + BOUND, "gRPC health never said SERVING"
                time.sleep(0.1)
            status, body = service.get("/readyz")
            assert status == 200, body
            ready = json.loads(body)
            assert ready["ready"] is True and ready["phase"] == "serving"
            assert ready["jwks"][ISSUER].startswith("unavailable")

            found = families(service)
            assert value(found, "authz_jwks_state", issuer=ISSUER, state="unavailable") == 1
            assert value(found, "authz_jwks_key_set_age_seconds", issuer=ISSUER) is None
            assert f"serving without keys for JWT issuer {ISSUER}" in service.stderr()

            # Routes that need no token are served; the provider's tokens are refused (401).
            assert status_of(service.check("/public/a")) == 200
            key = make_key("ES256")
            token = key.sign(claims(ISSUER, now=time.time(), audience="shop"))
            assert status_of(service.check("/api/a", {"authorization": f"Bearer {token}"})) == 401
        finally:
            code = service.stop()
        assert code == 0, service.stderr()[-2000:]


def test_with_keys_both_are_ready_and_list_no_provider(tmp_path: Path) -> None:
    key = make_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    policy(tmp_path / "policies", f"jwks_file: {jwks}")
    service = Service.on_loopback(
        tmp_path / "policies", tmp_path / "stderr.log", "--no-watch"
    ).start()
    try:
        status, body = service.get("/readyz")
        assert status == 200 and "jwks" not in json.loads(body)
        assert health_status(service.grpc_port) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert service.stop() == 0, service.stderr()[-2000:]
