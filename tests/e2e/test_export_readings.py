"""The exported filters read an ambiguous request the way the contract says (docs/policy.md,
"One rule for ambiguous requests"; docs/export.md): a real Envoy with `authz export envoy`'s
filters, each request's allow or deny written down from the contract, not from the service.

tests/e2e/test_export_differential.py compares the export with the service on generated sets;
this file pins each reading on its own, so a regression names the spelling it lets through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.envoy_bootstrap import REQUEST_HARDENING
from authz.export import export_envoy
from authz.policy import load_policy_set
from tests.support import https
from tests.support.certs import CertPaths, Pki, make_pki
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.tokens import SigningKey, claims, jwks_json, make_key, tamper
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

ISSUER = "https://id.readings.example"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
BLOCKED = "spiffe://cluster.local/ns/ops/sa/blocked"

POLICY = f"""
hosts: [shop.test]
authentication:
  jwt:
    - issuer: {ISSUER}
      jwks_file: JWKS
      from: [{{header: authorization, prefix: "Bearer "}}, {{header: x-token}}]
rules:
  - name: no-blocked
    action: deny
    from: [{{principals: ["{BLOCKED}"]}}]
  - name: no-guests
    action: deny
    when: [{{header: x-role, equals: guest}}]
  - name: users
    action: allow
    from: [{{issuers: ["{ISSUER}"]}}]
    to: [{{paths: [/me]}}]
  - name: root
    action: allow
    to: [{{paths: ["/", "*.json"]}}]
  - name: not-open-here
    action: deny
    to: [{{paths: [/open]}}]
"""
# Applies to every host: were `shop.test..` judged as some other host, /open would be allowed.
OPEN = """
rules:
  - {name: open, action: allow, to: [{paths: [/open]}]}
"""


@dataclass
class Setup:
    envoy: Envoy
    pki: Pki
    key: SigningKey
    two_sans: CertPaths

    def status(
        self,
        path: str,
        headers: list[tuple[str, str]] = [],  # noqa: B006 (never mutated)
        host: str = "shop.test",
        cert: CertPaths | None = None,
    ) -> int:
        return https.request(
            self.envoy.url,
            path,
            headers=[("host", host), *headers],
            ca=self.pki.ca,
            client_cert=cert,
        ).status

    def token(self) -> str:
        return self.key.sign(claims(ISSUER, now=time.time()))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("readings")
    pki = make_pki(root / "pki")
    two_sans = pki.authority.issue(
        pki.directory, "two-sans", common_name="two", uri_sans=[FRONTEND, BLOCKED]
    )
    key = make_key("RS256")
    (root / "jwks.json").write_text(jwks_json(key))
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(POLICY.replace("JWKS", str(root / "jwks.json")))
    (policies / "open.yaml").write_text(OPEN)
    exported = export_envoy(load_policy_set(str(policies)))
    assert exported.exportable, [str(f) for f in exported.findings]
    tls = TlsConfig(
        cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca, require_client_certificate=False
    )
    with (
        EchoUpstream() as upstream,
        Envoy(
            EnvoyConfig(
                authz_address="127.0.0.1:1",
                upstream_port=upstream.port,
                tls=tls,
                http_filters=exported.filter_dicts(),
                hcm_overrides=dict(REQUEST_HARDENING),
            ),
            root / "envoy",
        ) as envoy,
    ):
        yield Setup(envoy, pki, key, two_sans)


def test_a_host_with_a_dot_left_after_envoys_strip_is_refused(setup: Setup) -> None:
    assert setup.status("/", host="shop.test.") == 200  # Envoy strips one dot
    assert setup.status("/open", host="other.test") == 200
    assert setup.status("/open", host="shop.test.") == 403
    assert setup.status("/open", host="shop.test..") == 403
    assert setup.status("/", host="shop.test..") == 403


def test_the_auth_scheme_is_read_in_any_case(setup: Setup) -> None:
    token = setup.token()
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert setup.status("/me", [("authorization", f"{scheme} {token}")]) == 200, scheme
        forged = [("authorization", f"{scheme} {tamper(token)}")]
        assert setup.status("/", forged) == 401, scheme


def test_token_header_spellings_the_service_refuses_are_denied(setup: Setup) -> None:
    token = setup.token()
    for headers in (
        [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")],
        [("authorization", f"Basic dXNlcg==, Bearer {token}")],
        [("authorization", f"xBearer {token}")],
        [("authorization", f"Bearer {token} junk")],
        [("authorization", f"Bearer {token}+")],
        [("authorization", "Bearer ")],  # Envoy trims it to `Bearer`: an empty token
        [("authorization", "bearer")],
    ):
        assert setup.status("/", headers) == 403, headers
    # A header that does not mention the scheme is no token: the anonymous rule applies.
    assert setup.status("/", [("authorization", "Basic dXNlcg==")]) == 200


def test_a_token_in_two_headers_is_denied(setup: Setup) -> None:
    """The service refuses a token in two places (401 token_in_two_places, two different ones
    jwt_malformed); jwt_authn would verify both copies and let the request through."""
    token = setup.token()
    other = setup.key.sign(claims(ISSUER, now=time.time(), subject="bob"))
    assert setup.status("/me", [("x-token", token)]) == 200
    assert setup.status("/me", [("authorization", f"Bearer {token}")]) == 200
    for second in (token, other):
        both = [("authorization", f"bearer {token}"), ("x-token", second)]
        assert setup.status("/me", both) == 403, second
        assert setup.status("/", both) == 403, second
    # A header that is no token (`Basic`) is not a second place.
    basic = [("authorization", "Basic dXNlcg=="), ("x-token", token)]
    assert setup.status("/me", basic) == 200


def test_slash_only_paths_are_the_services_slash(setup: Setup) -> None:
    for path in ("/", "//", "///", "///%2E/"):
        assert setup.status(path) == 200, path


def test_an_allow_rule_holds_for_the_path_with_params_cut_too(setup: Setup) -> None:
    assert setup.status("/data.json") == 200
    assert setup.status("/secret/data;.json") == 403


def test_a_deny_condition_holds_for_any_element_of_a_repeated_header(setup: Setup) -> None:
    assert setup.status("/", [("x-role", "user")]) == 200
    for headers in (
        [("x-role", "user"), ("x-role", "guest")],
        [("x-role", "guest"), ("x-role", "user")],
        [("x-role", "user, guest")],
    ):
        assert setup.status("/", headers) == 403, headers


def test_a_deny_rule_on_principals_holds_for_any_san(setup: Setup) -> None:
    assert setup.status("/", cert=setup.pki.client) == 200
    assert setup.status("/", cert=setup.two_sans) == 403


def test_allow_rules_on_principals_need_svid_only(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        f"rules:\n  - {{name: frontend, action: allow, from: [{{principals: [{FRONTEND}]}}]}}\n"
    )
    policy = load_policy_set(str(tmp_path))
    [finding] = export_envoy(policy).findings
    assert finding.decides and "--svid-only" in finding.why
    assert export_envoy(policy, svid_only=True).exportable
