"""Opaque tokens and certificate-bound tokens through a real Envoy, at both doors: the gRPC door
(ext_authz grpc_service, include_peer_certificate) and the HTTP door (`authz envoy-config
--http`: http_service, SANITIZE_SET XFCC with the certificate), in front of the real `authz
serve`, which asks a real RFC 7662 endpoint served over HTTPS on loopback (trusted through
SSL_CERT_FILE, the client secret from the environment)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support import https
from tests.support.certs import CertPaths, Pki
from tests.support.envoy import Envoy, TlsConfig
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.introspection_server import IntrospectionServer
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

SECRET_ENV = "E2E_INTROSPECTION_SECRET"
ISSUER = "https://corp.example"


def _policy(endpoint: str) -> str:
    return f"""
authentication:
  introspection:
    - name: corp
      endpoint: {endpoint}
      issuer: {ISSUER}
      client_id: authz
      client_secret_env: {SECRET_ENV}
      timeout: 0.3
      cache: {{max_ttl: 1, inactive_ttl: 0.5}}
      claims_to_headers: {{scope: x-scope}}
    - name: bound
      endpoint: {endpoint}
      issuer: {ISSUER}
      client_id: authz
      client_secret_env: {SECRET_ENV}
      from: [{{header: x-bound-token}}]
      certificate_bound: true
rules:
  - name: users
    action: allow
    from: [{{request_principals: ["{ISSUER}/*"]}}]
    to: [{{paths: ["/api/{{**}}"]}}]
"""


def _thumbprint(cert: CertPaths) -> str:
    der = x509.load_pem_x509_certificate(cert.cert.read_bytes()).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@pytest.fixture
def endpoint(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[IntrospectionServer]:
    # Read by the service process: the test CA as its TLS trust, the secret from its environment.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    with IntrospectionServer(pki) as server:
        yield server


@pytest.fixture
def policies(tmp_path: Path, endpoint: IntrospectionServer) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "corp.yaml").write_text(_policy(endpoint.endpoint))
    return directory


Door = Callable[[], Envoy]


@pytest.fixture(params=["grpc", "http"])
def envoy(
    request: pytest.FixtureRequest,
    policies: Path,
    pki: Pki,
    upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    tmp_path: Path,
) -> Iterator[Envoy]:
    if request.param == "grpc":
        with ServiceProcess(policies) as service:
            yield envoy_factory(service.address, mtls=True)
    else:
        with ServeProcess(policies, "--no-grpc", "--http-trust-xfcc") as service:
            tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
            with HttpModeEnvoy(service, upstream, tmp_path / "envoy-http", tls=tls) as proxy:
                yield proxy


def call(
    envoy: Envoy, pki: Pki, headers: dict[str, str], cert: CertPaths | None = None
) -> https.Response:
    return https.request(
        envoy.url, "/api/orders", ca=pki.ca, client_cert=cert or pki.client, headers=headers
    )


def test_active_inactive_revoked(
    envoy: Envoy, pki: Pki, endpoint: IntrospectionServer, upstream: EchoUpstream
) -> None:
    endpoint.grant("opaque-e2e-1", sub="alice", scope="orders")
    good = call(envoy, pki, {"authorization": "Bearer opaque-e2e-1"})
    assert good.status == 200, good.text
    seen = upstream.requests[-1]
    assert seen.header("x-authz-request-principal") == f"{ISSUER}/alice"
    assert seen.header("x-scope") == "orders"
    assert seen.header("authorization") is None  # forward: false
    inactive = call(envoy, pki, {"authorization": "Bearer never-issued"})
    assert inactive.status == 401
    assert 'error="invalid_token"' in (inactive.header("www-authenticate") or "")
    endpoint.revoke("opaque-e2e-1")
    deadline = time.monotonic() + 10
    while call(envoy, pki, {"authorization": "Bearer opaque-e2e-1"}).status == 200:
        assert time.monotonic() < deadline, "still allowed long after max_ttl (1 s)"
        time.sleep(0.1)
    assert call(envoy, pki, {"authorization": "Bearer opaque-e2e-1"}).status == 401


@pytest.mark.parametrize("fault", ["slow", "garbage", "down"])
def test_an_outage_is_a_503_never_an_allow(
    envoy: Envoy, pki: Pki, endpoint: IntrospectionServer, upstream: EchoUpstream, fault: str
) -> None:
    endpoint.grant("opaque-e2e-f", sub="bob", scope="orders")
    if fault == "slow":
        endpoint.slow(2.0)
    elif fault == "garbage":
        endpoint.garbage(b"<html>503 maintenance</html>")
    else:
        endpoint.stop()
    upstream.clear()
    answer = call(envoy, pki, {"authorization": "Bearer opaque-e2e-f"})
    assert answer.status == 503, answer.text
    if isinstance(envoy, HttpModeEnvoy):
        # http_service: Envoy takes any 5xx of the service as a failed check and answers its
        # own status_on_error (503, no body); never an allow (failure_mode_allow: false).
        assert not answer.body
    else:
        # The service's own 503 (its timeout, 0.3 s, is inside Envoy's ext_authz timeout).
        assert answer.json()["error"]
    assert not upstream.requests
    endpoint.heal()


def test_a_bound_token_needs_its_certificate(
    envoy: Envoy, pki: Pki, endpoint: IntrospectionServer, upstream: EchoUpstream
) -> None:
    endpoint.grant(
        "opaque-e2e-b", sub="carol", scope="orders", cnf={"x5t#S256": _thumbprint(pki.client)}
    )
    own = call(envoy, pki, {"x-bound-token": "opaque-e2e-b"})
    assert own.status == 200, own.text
    other = pki.client_for("spiffe://cluster.local/ns/shop/sa/thief", stem="thief")
    stolen = call(envoy, pki, {"x-bound-token": "opaque-e2e-b"}, cert=other)
    assert stolen.status == 401
    assert 'error="invalid_token"' in (stolen.header("www-authenticate") or "")
