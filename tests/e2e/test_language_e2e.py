"""The second batch of the policy language through a real Envoy (issue 17): API keys, per-route
context, query conditions, path captures bound to claims, `methods: ["*"]` and trust-domain
aliases. One service process on a policy directory written here, one Envoy with mTLS (the test
PKI's frontend certificate is `spiffe://cluster.local/ns/shop/sa/frontend`) and a per-route
context set with `ExtAuthzPerRoute`, as `authz envoy-config --route-context` writes it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from authz.envoy_bootstrap import context_route
from authz.identity.apikeys import key_hash
from tests.support import https
from tests.support.certs import Pki
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEMO_KEY = (REPO / "examples/demo-issuer/private-key.pem").read_text()
ACME_KEY, BETA_KEY = "acme-key-0123456789abcdef", "beta-key-0123456789abcdef"

POLICY = """
authentication:
  mtls:
    trust_domains: [new.example]
    trust_domain_aliases: [cluster.local]
  jwt:
    - issuer: https://id.shop.example
      audiences: [shop-api]
      jwks_file: demo-jwks.json
  api_keys:
    - name: partners
      from: [{header: x-api-key}]
      keys_file: partners.keys.yaml

rules:
  - name: partners-read
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{methods: [GET], paths: ["/partners/{**}"]}]
    when: [{api_key_label: tier, any_of: [gold, silver]}]

  - name: partner-tenant
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{paths: ["/by-tenant/{tenant}"]}]
    when: [{api_key_label: tenant, equals_capture: tenant}]

  - name: tenant-members
    action: allow
    from: [{issuers: [https://id.shop.example]}]
    to: [{paths: ["/tenants/{tenant}/{**}"]}]
    when: [{claim: tenant_id, equals_capture: tenant}]

  - name: internal-route
    action: allow
    to: [{paths: ["/internal/{**}", "/public/{**}"]}]
    when: [{context: zone, equals: internal}]

  - name: reports-as-csv
    action: allow
    to: [{paths: [/reports]}]
    when: [{query: format, equals: csv}]

  - name: old-domain-frontend
    action: allow
    from: [{principals: ["new.example/ns/shop/sa/frontend"]}]
    to: [{methods: ["*"], paths: ["/frontend/{**}"]}]
"""

KEYS = f"""
keys:
  - {{id: acme-1, sha256: {key_hash(ACME_KEY)}, labels: {{tier: gold, tenant: acme}}}}
  - {{id: beta-1, sha256: {key_hash(BETA_KEY)}, labels: {{tier: bronze, tenant: beta}}}}
"""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[tuple[Envoy, EchoUpstream]]:
    """One service, Envoy and upstream for the module: the tests only send requests."""
    directory = tmp_path_factory.mktemp("language")
    policies = directory / "policies"
    policies.mkdir()
    (policies / "language.yaml").write_text(POLICY)
    (policies / "partners.keys.yaml").write_text(KEYS)
    shutil.copy(REPO / "policies" / "demo-jwks.json", policies)
    with EchoUpstream() as upstream, ServiceProcess(policies) as service:
        config = EnvoyConfig(
            authz_address=service.address,
            upstream_host=upstream.host,
            upstream_port=upstream.port,
            tls=TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca),
            # The per-route context: only checks of /internal/ carry zone=internal.
            extra_routes=[context_route("/internal/", {"zone": "internal"})],
        )
        with Envoy(config, directory / "envoy") as envoy:
            yield envoy, upstream


@pytest.fixture
def envoy(stack: tuple[Envoy, EchoUpstream]) -> Envoy:
    return stack[0]


def call(envoy: Envoy, pki: Pki, path: str, **kwargs: object) -> https.Response:
    return https.request(envoy.url, path, ca=pki.ca, client_cert=pki.client, **kwargs)  # type: ignore[arg-type]


def tenant_token(tenant: str) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://id.shop.example",
        "sub": "alice",
        "aud": "shop-api",
        "tenant_id": tenant,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, DEMO_KEY, algorithm="ES256", headers={"kid": "demo-2026"})


def test_api_keys(stack: tuple[Envoy, EchoUpstream], pki: Pki) -> None:
    envoy, upstream = stack
    answer = call(envoy, pki, "/partners/orders", headers=[("x-api-key", ACME_KEY)])
    assert answer.status == 200, answer.body
    seen = upstream.requests[-1]
    assert seen.header("x-authz-api-key") == "partners/acme-1"
    assert seen.header("x-api-key") is None  # the key never goes upstream

    # A known key whose label does not fit: no rule, and a key was presented: 403.
    assert call(envoy, pki, "/partners/orders", headers=[("x-api-key", BETA_KEY)]).status == 403
    # An unknown key: 401 api_key_invalid, whatever the rules say.
    bad = call(envoy, pki, "/partners/orders", headers=[("x-api-key", "guess")])
    assert bad.status == 401
    assert bad.header("www-authenticate") == 'ApiKey realm="partners"'
    # No key where a rule needed one: 401 with the ApiKey challenge.
    none = call(envoy, pki, "/partners/orders")
    assert none.status == 401 and none.header("www-authenticate") == 'ApiKey realm="partners"'
    # The key header sent twice (one good, one not): refused, never "the first one".
    twice = call(
        envoy, pki, "/partners/orders", headers=[("x-api-key", ACME_KEY), ("x-api-key", "guess")]
    )
    assert twice.status == 401
    # A client-sent x-authz-api-key never reaches the upstream as it was sent.
    spoof = call(
        envoy,
        pki,
        "/partners/a",
        headers=[("x-api-key", ACME_KEY), ("x-authz-api-key", "partners/root")],
    )
    assert spoof.status == 200
    assert upstream.requests[-1].header_values("x-authz-api-key") == ["partners/acme-1"]


def test_api_key_label_bound_to_a_capture(envoy: Envoy, pki: Pki) -> None:
    key = [("x-api-key", ACME_KEY)]
    assert call(envoy, pki, "/by-tenant/acme", headers=key).status == 200
    assert call(envoy, pki, "/by-tenant/%61cme", headers=key).status == 200  # same segment
    assert call(envoy, pki, "/by-tenant/beta", headers=key).status == 403


def test_claim_bound_to_a_path_capture(envoy: Envoy, pki: Pki) -> None:
    bearer = [("authorization", f"Bearer {tenant_token('acme')}")]
    assert call(envoy, pki, "/tenants/acme/orders", headers=bearer).status == 200
    assert call(envoy, pki, "/tenants/beta/orders", headers=bearer).status == 403
    # Spellings of the path cannot change what the capture binds.
    assert call(envoy, pki, "/tenants/x/../beta/orders", headers=bearer).status == 403
    assert call(envoy, pki, "/tenants//beta/orders", headers=bearer).status == 403
    assert call(envoy, pki, "/tenants/ACME/orders", headers=bearer).status == 403
    # No token: the rule needed one: 401 Bearer.
    assert call(envoy, pki, "/tenants/acme/orders").status == 401


def test_per_route_context(envoy: Envoy, pki: Pki) -> None:
    assert call(envoy, pki, "/internal/status").status == 200
    # The same rule on a route without the context: no match.
    assert call(envoy, pki, "/public/status").status == 403


def test_query_conditions(envoy: Envoy, pki: Pki) -> None:
    assert call(envoy, pki, "/reports?format=csv").status == 200
    assert call(envoy, pki, "/reports?%66ormat=%63sv").status == 200  # decoded
    # An allow rule holds only under every reading: each value of a repeated parameter.
    assert call(envoy, pki, "/reports?format=pdf&format=csv").status == 403
    assert call(envoy, pki, "/reports?format=csv&%66ormat=csv").status == 200
    assert call(envoy, pki, "/reports?format=pdf").status == 403
    assert call(envoy, pki, "/reports").status == 403


def test_method_wildcard_and_trust_domain_aliases(envoy: Envoy, pki: Pki) -> None:
    # The frontend certificate is in cluster.local, an alias of new.example: the rule written
    # with new.example matches it, for any method.
    for method in ("GET", "DELETE", "PATCH"):
        assert call(envoy, pki, "/frontend/x", method=method).status == 200, method
