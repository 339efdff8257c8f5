"""The whole path, as an operator runs it: a real Envoy with an mTLS listener (client
certificates from a CA made here, SPIFFE URI SANs), our service as a process on the example
policies, and an upstream that echoes what it received."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import https
from tests.support.certs import FRONTEND_SPIFFE_ID, Pki
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MINT = REPO / "examples" / "demo-issuer" / "mint.py"


def _serve(directory: Path, pki: Pki) -> Iterator[ServiceProcess]:
    """Our service on a copy of the example policies, verifying peer certificates too."""
    policies = directory / "policies"
    shutil.copytree(REPO / "policies", policies)
    with ServiceProcess(policies, extra_args=("--ca-bundle", str(pki.ca))) as running:
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServiceProcess]:
    """One service for the tests that only send checks to it (each has an Envoy of its own)."""
    yield from _serve(tmp_path_factory.mktemp("service"), pki)


@pytest.fixture
def own_service(tmp_path: Path, pki: Pki) -> Iterator[ServiceProcess]:
    """A service the test stops."""
    yield from _serve(tmp_path, pki)


def token(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(MINT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def call(
    envoy_url: str,
    pki: Pki,
    path: str,
    *,
    cert: object = None,
    headers: object = (),
    method: str = "GET",
) -> https.Response:
    return https.request(
        envoy_url,
        path,
        method=method,
        ca=pki.ca,
        client_cert=cert if cert is not None else pki.client,
        headers=headers,
    )  # type: ignore[arg-type]


def test_allowed_workload_reaches_upstream_with_identity(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    spoofed = {
        "x-authz-principal": "spiffe://cluster.local/ns/shop/sa/payments",
        "x-authz-request-principal": "https://id.shop.example/admin",
        "x-user-id": "admin",
    }
    answer = call(envoy.url, pki, "/api/orders/42", headers=spoofed)
    assert answer.status == 200, answer.text
    seen = upstream.requests[-1]
    assert seen.header("x-authz-principal") == FRONTEND_SPIFFE_ID
    assert seen.header("x-authz-decision-id")
    # Client-sent identity headers never reach the upstream: overwritten or removed.
    assert seen.header_values("x-authz-principal") == [FRONTEND_SPIFFE_ID]
    assert seen.header("x-authz-request-principal") is None
    assert seen.header("x-user-id") is None


def test_denied_workload_gets_403_json(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    stranger = pki.client_for("spiffe://cluster.local/ns/shop/sa/stranger")
    # Only the orders workload may take payments; no token could help, so 403 (not 401).
    answer = call(envoy.url, pki, "/api/payments", cert=stranger, method="POST")
    assert answer.status == 403
    assert answer.header("content-type") == "application/json"
    body = answer.json()
    assert body["error"] == "forbidden" and body["decision_id"]
    assert "rule" not in answer.text and "no_matching_rule" not in answer.text
    assert call(envoy.url, pki, "/api/payments", method="POST").status == 403  # frontend neither
    # Reading orders is open to customers with a token, so a stranger without one hears 401.
    assert call(envoy.url, pki, "/api/orders", cert=stranger).status == 401
    assert upstream.requests == []


def test_workload_outside_trust_domain_is_unauthenticated(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    foreign = pki.client_for("spiffe://other.mesh/ns/shop/sa/frontend")
    assert call(envoy.url, pki, "/api/orders", cert=foreign).status == 401  # anonymous


def test_encoded_slash_is_400(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    for path in ("/api/orders%2F..%2F..%2Fadmin", "/api/..;/admin", "/api/%5Cadmin"):
        answer = call(envoy.url, pki, path)
        assert answer.status == 400, (path, answer.status)
    assert upstream.requests == []


def test_end_user_token_through_envoy(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    good = token("--sub", "alice", "--scope", "cart")
    answer = call(envoy.url, pki, "/api/cart/items", headers={"authorization": f"Bearer {good}"})
    assert answer.status == 200, answer.text
    seen = upstream.requests[-1]
    assert seen.header("x-user-id") == "alice"
    assert seen.header("x-authz-request-principal") == "https://id.shop.example/alice"
    # forward defaults to false (policies/shop.yaml does not set it): the token stays at Envoy.
    assert seen.header("authorization") is None

    expired = token("--ttl", "-3600")
    rejected = call(
        envoy.url, pki, "/api/cart/items", headers={"authorization": f"Bearer {expired}"}
    )
    assert rejected.status == 401
    assert (rejected.header("www-authenticate") or "").startswith('Bearer error="invalid_token"')

    missing = call(envoy.url, pki, "/api/cart/items")
    assert missing.status == 401 and missing.header("www-authenticate") == "Bearer"

    no_scope = token("--scope", "profile")
    assert (
        call(
            envoy.url, pki, "/api/cart/items", headers={"authorization": f"Bearer {no_scope}"}
        ).status
        == 403
    )


def test_envoy_fails_closed_when_service_stops(
    own_service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    service = own_service
    envoy = envoy_factory(service.address, mtls=True)
    assert call(envoy.url, pki, "/api/orders").status == 200
    assert service.terminate() == 0  # SIGTERM: a clean exit
    before = len(upstream.requests)
    answer = call(envoy.url, pki, "/api/orders")
    assert answer.status == 503
    assert len(upstream.requests) == before
