"""A client certificate with two URI SANs is not a workload identity (docs/policy.md, "One rule
for ambiguous requests"): where the service sees the certificate it is refused with 403
`peer_certificate_invalid` at both doors, through a real Envoy; one SAN is served as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import https
from tests.support.certs import FRONTEND_SPIFFE_ID, CertPaths, Pki
from tests.support.envoy import Envoy, TlsConfig
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

POLICY = f"""
rules:
  - {{name: frontend, action: allow, from: [{{principals: ["{FRONTEND_SPIFFE_ID}"]}}]}}
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "sans.yaml").write_text(POLICY)
    return directory


@pytest.fixture
def two_sans(pki: Pki, tmp_path: Path) -> CertPaths:
    # The allowed SPIFFE ID first, as a reader that takes the first SAN would see it.
    sans = [FRONTEND_SPIFFE_ID, "spiffe://cluster.local/ns/ops/sa/admin"]
    return pki.authority.issue(tmp_path, "two-sans", common_name="two", uri_sans=sans)


def _statuses(envoy: Envoy, pki: Pki, two_sans: CertPaths) -> tuple[int, int]:
    one = https.request(envoy.url, "/x", ca=pki.ca, client_cert=pki.client)
    two = https.request(envoy.url, "/x", ca=pki.ca, client_cert=two_sans)
    return one.status, two.status


def test_grpc_door_refuses_two_uri_sans(
    policies: Path, pki: Pki, two_sans: CertPaths, envoy_factory: EnvoyFactory
) -> None:
    with ServiceProcess(policies, extra_args=("--ca-bundle", str(pki.ca))) as service:
        envoy = envoy_factory(service.address, mtls=True)
        assert _statuses(envoy, pki, two_sans) == (200, 403)


def test_http_door_refuses_two_uri_sans(
    policies: Path, pki: Pki, two_sans: CertPaths, upstream: EchoUpstream, tmp_path: Path
) -> None:
    trusting = ("--no-grpc", "--http-trust-xfcc", "--ca-bundle", str(pki.ca))
    with ServeProcess(policies, *trusting) as service:
        tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
        with HttpModeEnvoy(service, upstream, tmp_path / "envoy-http", tls=tls) as envoy:
            assert _statuses(envoy, pki, two_sans) == (200, 403)
