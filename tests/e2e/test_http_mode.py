"""The HTTP mode end to end: a real Envoy running the config `authz envoy-config --http` prints
(ext_authz `http_service`, downstream mTLS, SANITIZE_SET, /readyz health checks), the real
`authz serve --http-listen` process with the example policies, and an upstream that echoes what
it received. The same corpus then goes through the gRPC mode and must get the same status and
upstream identity headers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.wire.http import PROXY_REPLACES
from tests.support import https
from tests.support.certs import FRONTEND_SPIFFE_ID, Pki
from tests.support.envoy import Envoy, TlsConfig, validate
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.nginx import replaced_headers
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MINT = REPO / "examples" / "demo-issuer" / "mint.py"
IDENTITY = ("x-authz-principal", "x-authz-request-principal", "x-user-id")
SPOOFED = {
    "x-authz-principal": "spiffe://cluster.local/ns/shop/sa/payments",
    "x-authz-request-principal": "https://id.shop.example/admin",
    "x-user-id": "admin",
    "x-original-uri": "/healthz",
    "x-authz-original-path": "/healthz",
}


def token(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(MINT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(REPO / "policies", copy)
    return copy


@pytest.fixture(scope="module")
def http_door(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Envoy, EchoUpstream]]:
    """One HTTP-door service and Envoy for the module, on a copy of the policies no test
    changes (the tests only send requests through them)."""
    directory = tmp_path_factory.mktemp("http-door")
    policies = directory / "policies"
    shutil.copytree(REPO / "policies", policies)
    trusting = ("--no-grpc", "--http-trust-xfcc", "--ca-bundle", str(pki.ca))
    with EchoUpstream() as upstream, ServeProcess(policies, *trusting) as service:
        tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
        with HttpModeEnvoy(service, upstream, directory / "envoy-http", tls=tls) as envoy:
            yield envoy, upstream


@pytest.fixture
def http_upstream(http_door: tuple[Envoy, EchoUpstream]) -> EchoUpstream:
    """The shared door's upstream, with nothing recorded yet."""
    http_door[1].clear()
    return http_door[1]


@pytest.fixture
def http_envoy(http_door: tuple[Envoy, EchoUpstream], http_upstream: EchoUpstream) -> Envoy:
    return http_door[0]


def call(
    envoy: Envoy, pki: Pki, path: str, *, headers: object = (), method: str = "GET", cert=None
) -> https.Response:
    return https.request(
        envoy.url,
        path,
        method=method,
        ca=pki.ca,
        client_cert=cert if cert is not None else pki.client,
        headers=headers,  # type: ignore[arg-type]
    )


def test_envoy_config_http_validates(tmp_path: Path, pki: Pki) -> None:
    mtls = ["--mtls", "--server-cert", str(pki.server.cert), "--server-key", str(pki.server.key),
            "--client-ca", str(pki.ca)]  # fmt: skip
    ready = ["--authz", "127.0.0.1:9292", "--authz", "127.0.0.1:9293",
             "--readyz-port", "9092", "--readyz-port", "9093"]  # fmt: skip
    for name, extra in (("plain", []), ("mtls", mtls), ("ready", [*mtls, *ready])):
        path = tmp_path / f"envoy-http-{name}.yaml"
        subprocess.run(
            [sys.executable, "-m", "authz", "envoy-config", "--http", "--path-prefix", "/check",
             *extra, "-o", str(path)],
            cwd=REPO, check=True, timeout=60,
        )  # fmt: skip
        validate(path)
    # One readiness port per endpoint, or none: a miscount is refused, not guessed.
    wrong = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "--http", "--readyz-port", "9092",
         "--readyz-port", "9093"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and "readiness ports" in wrong.stderr


def test_allow_sets_identity_from_xfcc_and_strips_spoofed_headers(
    http_envoy: Envoy, pki: Pki, http_upstream: EchoUpstream
) -> None:
    upstream = http_upstream
    answer = call(http_envoy, pki, "/api/orders/42?x=%20y", headers=SPOOFED)
    assert answer.status == 200, answer.text
    seen = upstream.requests[-1]
    assert seen.path == "/api/orders/42?x=%20y"
    assert seen.header("server") is None and seen.header("date") is None  # granian's, not ours
    assert seen.header_values("x-authz-principal") == [FRONTEND_SPIFFE_ID]
    assert seen.header("x-authz-decision-id")
    assert seen.header("x-authz-request-principal") is None
    assert seen.header("x-user-id") is None
    assert seen.header("x-envoy-auth-headers-to-remove") is None


def test_deny_is_403_json_and_401_challenge_reaches_the_client(
    http_envoy: Envoy, pki: Pki, http_upstream: EchoUpstream
) -> None:
    upstream = http_upstream
    denied = call(http_envoy, pki, "/api/payments", method="POST")
    assert denied.status == 403
    assert denied.header("content-type") == "application/json"
    assert denied.json()["error"] == "forbidden"
    missing = call(http_envoy, pki, "/api/cart/items")
    assert missing.status == 401
    assert missing.header("www-authenticate") == "Bearer"
    expired = call(
        http_envoy,
        pki,
        "/api/cart/items",
        headers={"authorization": f"Bearer {token('--ttl', '-3600')}"},
    )
    assert expired.status == 401
    assert 'error="invalid_token"' in (expired.header("www-authenticate") or "")
    good = https.request(
        http_envoy.url,
        "/api/cart/items",
        method="POST",
        body=b'{"item": 7}',
        ca=pki.ca,
        client_cert=pki.client,
        headers={
            "authorization": f"Bearer {token('--sub', 'alice', '--scope', 'cart')}",
            "content-type": "application/json",
            "x-user-id": "admin",
        },
    )
    assert good.status == 200, good.text
    seen = upstream.requests[-1]
    assert seen.header("x-authz-request-principal")
    assert seen.header_values("x-user-id") == ["alice"]  # claims_to_headers, spoof overwritten
    # The allow answer's own content-length/content-type never replace the request's.
    assert seen.body == b'{"item": 7}'
    assert seen.header("content-type") == "application/json"
    assert all("/api/payments" not in r.path for r in upstream.requests)


def test_ambiguous_path_is_400_from_the_service(
    http_envoy: Envoy, pki: Pki, http_upstream: EchoUpstream
) -> None:
    upstream = http_upstream
    # Envoy's own normalization lets an encoded control character through; the service refuses
    # it like the gRPC door does.
    answer = call(http_envoy, pki, "/api/orders%01")
    assert answer.status == 400
    assert answer.json()["error"] == "bad_request"
    assert not upstream.requests


def test_path_prefix_is_stripped_and_xfcc_untrusted_listener_is_anonymous(
    policies: Path, pki: Pki, upstream: EchoUpstream, tmp_path: Path
) -> None:
    # Without --http-trust-xfcc the listener ignores Envoy's XFCC: the workload is anonymous.
    with ServeProcess(policies, "--no-grpc", "--http-path-prefix", "/check") as service:
        tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
        with HttpModeEnvoy(
            service, upstream, tmp_path / "envoy-prefix", tls=tls, path_prefix="/check"
        ) as envoy:
            assert call(envoy, pki, "/api/orders").status == 401
            good = call(
                envoy,
                pki,
                "/api/cart/items?x=1",
                headers={"authorization": f"Bearer {token('--sub', 'bob', '--scope', 'cart')}"},
            )
            assert good.status == 200, good.text
            assert upstream.requests[-1].path == "/api/cart/items?x=1"
            assert upstream.requests[-1].header("x-authz-principal") is None


CORPUS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/api/orders/42", dict(SPOOFED)),
    ("POST", "/api/payments", {}),
    ("GET", "/api/cart/items", {}),
    ("GET", "/api/cart/items", {"authorization": "Bearer not.a.jwt"}),
    ("GET", "/api/..;/payments", {}),
    ("GET", "/api/orders%01", {}),
    ("GET", "/api/a%2Fb", {}),
    ("GET", "/nowhere", {"x-original-uri": "/api/orders"}),
]


def _run_corpus(
    envoy: Envoy, pki: Pki, upstream: EchoUpstream, corpus: list[tuple[str, str, dict[str, str]]]
) -> list[tuple[object, ...]]:
    results = []
    for method, path, headers in corpus:
        upstream.clear()
        answer = call(envoy, pki, path, method=method, headers=headers)
        seen = upstream.requests[-1] if upstream.requests else None
        identity = tuple(seen.header(name) for name in IDENTITY) if seen else None
        results.append((method, path, answer.status, identity, answer.header("www-authenticate")))
    return results


def test_grpc_and_http_modes_agree(
    http_envoy: Envoy,
    http_upstream: EchoUpstream,
    policies: Path,
    pki: Pki,
    upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
) -> None:
    good = token("--sub", "carol", "--scope", "cart")
    corpus = [*CORPUS, ("GET", "/api/cart/items", {**SPOOFED, "authorization": f"Bearer {good}"})]
    http_results = _run_corpus(http_envoy, pki, http_upstream, corpus)
    with ServiceProcess(policies, extra_args=("--ca-bundle", str(pki.ca))) as service:
        grpc_envoy = envoy_factory(service.address, mtls=True, normalize_path=True,
                                   merge_slashes=True,
                                   path_with_escaped_slashes_action="REJECT_REQUEST")  # fmt: skip
        grpc_results = _run_corpus(grpc_envoy, pki, upstream, corpus)
    assert http_results == grpc_results
    assert http_results[-1][2] == 200 and http_results[-1][3][1]  # the token's principal


def _checks_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("authz_checks_total{")
    )


def _grpc_check(address: str, path: str) -> int:
    """One Check on the gRPC door of `address`; the HTTP status it answers (200 for OK)."""
    import grpc

    from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", path, "shop.example.com"
    with grpc.insecure_channel(address) as channel:
        answer = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)
    return 200 if answer.status.code == 0 else answer.denied_response.status.code


def test_two_workers_serve_both_doors_with_one_log_and_metrics_and_exit_0_on_sigterm(
    policies: Path, pki: Pki, upstream: EchoUpstream, tmp_path: Path
) -> None:
    decisions = tmp_path / "decisions.jsonl"
    args = ("--http-trust-xfcc", "--ca-bundle", str(pki.ca), "--decision-log", str(decisions))
    service = ServeProcess(policies, *args, workers=2)
    with service:
        tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
        with HttpModeEnvoy(service, upstream, tmp_path / "envoy-w2", tls=tls) as envoy:
            allowed = [call(envoy, pki, f"/api/orders/{i}") for i in range(6)]
            denied = call(envoy, pki, "/api/payments", method="POST")
        assert [a.status for a in allowed] == [200] * 6 and denied.status == 403
        upstream_ids = {r.header("x-authz-decision-id") for r in upstream.requests}
        # The gRPC door of each worker answers beside the HTTP one (no identity: 401).
        assert [_grpc_check(service.grpc_address(w), "/api/orders/1") for w in (0, 1)] == [401] * 2
        # Each worker counts its own checks, both doors alike (no door label): 6 + 1 + 2.
        per_worker = [_checks_total(service.metrics(w)) for w in (0, 1)]
        assert all(count >= 2 for count in per_worker) and sum(per_worker) == 9, per_worker
        assert service.stop() == 0, service.log()[-3000:]
        assert "Traceback" not in service.log()
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(records) == 9
    assert upstream_ids <= {r["decision_id"] for r in records}
    assert sorted(r["decision"] for r in records).count("allow") == 6


def _direct(address: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """A request straight to an HTTP listener (as nginx's auth_request or Traefik sends it)."""
    import http.client

    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_forward_auth_listener_judges_the_proxys_uri_and_envoy_listener_ignores_it(
    policies: Path, pki: Pki
) -> None:
    xfcc = f"URI={FRONTEND_SPIFFE_ID}"
    replaces = {PROXY_REPLACES: replaced_headers()}  # what the shipped configs send
    nginx = {"host": "shop.example.com", "x-original-method": "GET",
             "x-forwarded-client-cert": xfcc, **replaces}  # fmt: skip
    forward = ("--no-grpc", "--http-mode", "forward-auth", "--http-trust-xfcc")
    with ServeProcess(policies, *forward) as service:
        address = service.http_address()
        assert _direct(address, "/auth", {**nginx, "x-original-uri": "/api/orders/1"})[0] == 200
        status, body = _direct(address, "/auth", {**nginx, "x-original-uri": "/api/payments"})
        assert status == 403 and json.loads(body)["error"] == "forbidden"
        traefik = {"host": "authz", "x-forwarded-method": "GET",
                   "x-forwarded-uri": "/api/orders", "x-forwarded-host": "shop.example.com",
                   "x-forwarded-client-cert": xfcc, **replaces}  # fmt: skip
        assert _direct(address, "/", traefik)[0] == 200
        # Without the proxy's headers there is nothing to judge: refused, never the own path.
        assert _direct(address, "/api/orders/1", {"host": "shop.example.com"})[0] == 400
        assert service.stop() == 0
    with ServeProcess(policies, "--no-grpc", "--http-trust-xfcc") as service:
        # An envoy-mode listener never takes a client's X-Original-URI for the request: without
        # Envoy's x-authz-original-path the request is refused.
        spoof = {**nginx, "x-original-uri": "/api/orders/1"}
        assert _direct(service.http_address(), "/api/orders/1", spoof)[0] == 400


def test_serve_refuses_nothing_to_serve_and_a_taken_http_address(
    policies: Path, tmp_path: Path
) -> None:
    base = [sys.executable, "-m", "authz", "serve", "--policies", str(policies), "--no-watch"]
    nothing = subprocess.run(
        [*base, "--no-grpc"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert nothing.returncode == 1 and "nothing to serve" in nothing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = subprocess.run(
            [*base, "--no-grpc", "--http-listen", address],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert busy.returncode == 2
    assert f"cannot listen on {address}: address already in use" in busy.stderr


def test_a_unix_http_socket_gets_the_socket_mode_and_answers(policies: Path) -> None:
    import http.client
    import stat
    import tempfile

    with tempfile.TemporaryDirectory(prefix="authz-") as short:  # a unix path is short
        path = f"{short}/http.sock"
        args = ("--no-grpc", "--http-listen", f"unix:{path}", "--socket-mode", "0600")
        with ServeProcess(policies, *args) as service:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

            class Unix(http.client.HTTPConnection):
                def connect(self) -> None:
                    self.sock = socket.socket(socket.AF_UNIX)
                    self.sock.connect(path)

            connection = Unix("localhost", timeout=10)
            envoy_like = {"host": "shop.example.com", "x-authz-original-path": "/healthz"}
            connection.request("GET", "/healthz", headers=envoy_like)
            assert connection.getresponse().status == 200
            connection.close()
            assert service.stop() == 0


def test_a_policy_reload_on_sighup_reaches_the_http_door(policies: Path) -> None:
    envoy_like = {"host": "shop.example.com", "x-authz-original-path": "/healthz"}
    with ServeProcess(policies, "--no-grpc") as service:
        address = service.http_address()
        assert _direct(address, "/healthz", envoy_like)[0] == 200
        shop = policies / "shop.yaml"
        shop.write_text(shop.read_text().replace("paths: [/healthz, /readyz]", "paths: [/readyz]"))
        assert service.process is not None
        service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30  # a bound on waiting, not a timed assertion
        while _direct(address, "/healthz", envoy_like)[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _direct(address, "/healthz", envoy_like)[0] == 403
        assert service.stop() == 0
