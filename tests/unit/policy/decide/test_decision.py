"""Decision order, 401 vs 403, audit and dry_run, roles, `when` conditions, hosts."""

from __future__ import annotations

from typing import Any

import pytest

from authz.model import Decision, Identity, Request, ShadowMatch
from authz.policy import evaluate, no_policy_decision
from authz.policy.language.patterns import normalize_host
from authz.policy.language.spec import Authentication

from ..conftest import ANON, FRONTEND, ident, policy, req, user

SHOP_POLICY = """
hosts: [shop.example.com]
roles:
  orders-reader:
    - {methods: [GET], paths: [/api/orders, "/api/orders/{*}"]}
rules:
  - name: no-debug
    action: deny
    to: [{paths: ["/debug/{**}"]}]
  - name: frontend-reads-orders
    action: allow
    from: [{principals: ["spiffe://cluster.local/ns/shop/sa/frontend"]}]
    to: [{role: orders-reader}]
  - name: customers-use-cart
    action: allow
    from: [{issuers: [https://id.example.com]}]
    to: [{methods: [GET, POST], paths: ["/api/cart/{**}"]}]
    when: [{claim: scope, contains: "cart"}]
  - name: try-new-admin-rule
    action: allow
    dry_run: true
    from: [{namespaces: [ops]}]
    to: [{paths: ["/admin/{**}"]}]
  - name: watch-admin
    action: audit
    to: [{paths: ["/admin/{**}"]}]
  - name: open-debug
    action: allow
    to: [{paths: ["/debug/{**}"]}]
"""


def decide(request: Request, identity: Identity = ANON, *files: str) -> Decision:
    p = policy(*(files or (SHOP_POLICY,)))
    return evaluate(p.for_host(request.host), request, identity)


def test_deny_beats_allow() -> None:
    d = decide(req("/debug/x"), ident(FRONTEND))
    assert (d.allowed, d.status, d.reason, d.rule) == (False, 403, "no-debug", "no-debug")


def test_allow_names_the_rule() -> None:
    d = decide(req("/api/orders/7"), ident(FRONTEND))
    assert (d.allowed, d.status, d.reason, d.rule) == (
        True,
        200,
        "frontend-reads-orders",
        "frontend-reads-orders",
    )
    assert d.challenge is None


def test_role_entries_are_any_of() -> None:
    assert decide(req("/api/orders"), ident(FRONTEND)).allowed
    assert not decide(req("/api/orders", "DELETE"), ident(FRONTEND)).allowed
    assert not decide(req("/api/orders/7/items"), ident(FRONTEND)).allowed


def test_not_role() -> None:
    d = decide(
        req("/api/other"),
        ANON,
        """
        roles:
          reader: [{methods: [GET], paths: [/api/orders]}]
        rules:
          - {name: r, action: allow, to: [{not_role: reader}]}
        """,
    )
    assert d.allowed
    d = decide(
        req("/api/orders"),
        ANON,
        "rules: [{name: r, action: allow, to: [{not_role: reader}]}]\n",
        "roles: {reader: [{methods: [GET], paths: [/api/orders]}]}\n",
    )
    assert not d.allowed


def test_role_from_another_file() -> None:
    d = decide(
        req("/api/orders"),
        ANON,
        "rules: [{name: r, action: allow, to: [{role: reader}]}]\n",
        "roles: {reader: [{methods: [GET], paths: [/api/orders]}]}\n",
    )
    assert d.allowed and d.reason == "r"


def test_401_when_an_allow_rule_needs_a_jwt_that_is_missing() -> None:
    d = decide(req("/api/cart/items"))
    assert (d.allowed, d.status, d.reason, d.challenge) == (
        False,
        401,
        "no_matching_rule",
        "Bearer",
    )


def test_403_when_the_jwt_is_there_but_does_not_satisfy() -> None:
    d = decide(req("/api/cart/items"), ident(jwt=user(scope="profile")))
    assert (d.status, d.reason, d.challenge) == (403, "no_matching_rule", None)


def test_space_separated_scope_counts_as_list() -> None:
    d = decide(req("/api/cart/items", "POST"), ident(jwt=user(scope="profile cart")))
    assert d.allowed and d.reason == "customers-use-cart"


def test_403_when_no_matching_allow_rule_needs_a_jwt() -> None:
    d = decide(req("/api/orders/7"))  # frontend rule needs a workload, not a JWT
    assert (d.status, d.reason, d.challenge) == (403, "no_matching_rule", None)


def test_401_only_counts_rules_whose_to_matches() -> None:
    d = decide(req("/elsewhere"))
    assert d.status == 403


@pytest.mark.parametrize(
    "rule",
    [
        "{name: r, action: allow, from: [{request_principals: ['*']}]}",
        "{name: r, action: allow, from: [{issuers: [https://id.example.com]}]}",
        "{name: r, action: allow, when: [{claim: sub, present: true}]}",
    ],
)
def test_what_needs_a_jwt(rule: str) -> None:
    d = decide(req("/x"), ANON, f"rules: [{rule}]\n")
    assert (d.status, d.challenge) == (401, "Bearer")


def test_dry_run_allow_is_shadow_only() -> None:
    d = decide(req("/admin/x"), ident("spiffe://cluster.local/ns/ops/sa/tool"))
    assert not d.allowed and d.reason == "no_matching_rule"
    assert d.shadow == (
        ShadowMatch("try-new-admin-rule", "allow", True),
        ShadowMatch("watch-admin", "audit", False),
    )


def test_dry_run_deny_does_not_deny() -> None:
    d = decide(
        req("/x"),
        ANON,
        """
        rules:
          - {name: would-deny, action: deny, dry_run: true}
          - {name: open, action: allow}
        """,
    )
    assert d.allowed and d.reason == "open"
    assert d.shadow == (ShadowMatch("would-deny", "deny", True),)


def test_audit_listed_on_deny_too() -> None:
    d = decide(req("/x"), ANON, "rules: [{name: a, action: audit}, {name: d, action: deny}]\n")
    assert d.reason == "d" and d.shadow == (ShadowMatch("a", "audit", False),)


def test_dry_run_allow_does_not_cause_401() -> None:
    d = decide(
        req("/x"),
        ANON,
        "rules: [{name: r, action: allow, dry_run: true, from: [{issuers: [i]}]}]\n",
    )
    assert d.status == 403


def test_first_deny_in_set_order_gives_the_reason() -> None:
    d = decide(
        req("/x"), ANON, "rules: [{name: b, action: deny}]\n", "rules: [{name: a, action: deny}]\n"
    )
    assert d.reason == "b"  # p0.yaml before p1.yaml


def test_no_policy_for_host() -> None:
    p = policy(SHOP_POLICY)
    assert p.for_host("other.example.com") is None
    d = evaluate(None, req(host="other.example.com"), ANON)
    assert d == no_policy_decision()
    assert (d.allowed, d.status, d.reason) == (False, 403, "no_policy_for_host")


def test_trust_domains_drop_foreign_workloads() -> None:
    p = policy(
        """
        authentication: {mtls: {trust_domains: [cluster.local]}}
        rules: [{name: r, action: allow, from: [{principals: ['*']}]}]
        """
    )
    hp = p.for_host("x")
    assert hp is not None
    assert evaluate(hp, req(), ident(FRONTEND)).allowed
    assert not evaluate(hp, req(), ident("spiffe://evil.td/ns/shop/sa/frontend")).allowed
    assert not evaluate(hp, req(), ident("CN=not-spiffe")).allowed


# --- when -----------------------------------------------------------------------------------

NESTED: dict[str, Any] = {
    "realm_access": {"roles": ["admin", "user"]},
    "scp": "read write",
    "groups": ["a", "b"],
    "email_verified": True,
    "level": 3,
    "tenant": "acme",
    "https://example.com/roles": ["editor"],
}

# (condition, claims, matches)
CLAIMS: list[tuple[str, dict[str, Any], bool]] = [
    ("{claim: tenant, equals: acme}", NESTED, True),
    ("{claim: tenant, equals: other}", NESTED, False),
    ("{claim: level, equals: 3}", NESTED, True),
    ("{claim: level, equals: '3'}", NESTED, False),
    ("{claim: email_verified, equals: true}", NESTED, True),
    ("{claim: level, equals: true}", {"level": 1}, False),  # True == 1 in Python, not here
    ("{claim: missing, equals: x}", NESTED, False),
    ("{claim: realm_access.roles, contains: admin}", NESTED, True),
    ("{claim: realm_access.roles, contains: root}", NESTED, False),
    ("{claim: realm_access.missing, contains: admin}", NESTED, False),
    ("{claim: scp, contains: write}", NESTED, True),
    ("{claim: scp, contains: wri}", NESTED, False),
    ("{claim: tenant, contains: acme}", NESTED, False),  # only scope/scp strings are lists
    ("{claim: 'https://example.com/roles', contains: editor}", NESTED, True),
    ("{claim: tenant, any_of: [x, acme]}", NESTED, True),
    ("{claim: tenant, any_of: [x, y]}", NESTED, False),
    ("{claim: groups, any_of: [b, c]}", NESTED, True),
    ("{claim: groups, any_of: [c]}", NESTED, False),
    ("{claim: realm_access, present: true}", NESTED, True),
    ("{claim: realm_access.roles, present: true}", NESTED, True),
    ("{claim: nope, present: true}", NESTED, False),
    ("{claim: nope, present: false}", NESTED, True),
    ("{claim: tenant, not_equals: acme}", NESTED, False),
    ("{claim: tenant, not_equals: other}", NESTED, True),
    ("{claim: groups, not_contains: a}", NESTED, False),
    ("{claim: groups, not_any_of: [x]}", NESTED, True),
]


@pytest.mark.parametrize(("cond", "claims", "expected"), CLAIMS)
def test_claim_conditions(cond: str, claims: dict[str, Any], expected: bool) -> None:
    d = decide(
        req(), ident(jwt=user(**claims)), f"rules: [{{name: r, action: allow, when: [{cond}]}}]\n"
    )
    assert d.allowed is expected


def test_claim_condition_without_jwt_does_not_match() -> None:
    d = decide(
        req(), ANON, "rules: [{name: r, action: allow, when: [{claim: tenant, equals: acme}]}]\n"
    )
    assert not d.allowed and d.status == 401


HEADERS: list[tuple[str, dict[str, str], bool]] = [
    ("{header: x-env, equals: prod}", {"x-env": "prod"}, True),
    ("{header: X-Env, equals: prod}", {"x-env": "prod"}, True),  # names compared lower-case
    ("{header: x-env, equals: prod}", {"x-env": "production"}, False),
    ("{header: x-env, equals: prod}", {}, False),
    ("{header: x-env, prefix: pro}", {"x-env": "production"}, True),
    ("{header: x-env, prefix: dev}", {"x-env": "production"}, False),
    ("{header: x-env, prefix: dev}", {}, False),
    ("{header: x-env, any_of: [dev, prod]}", {"x-env": "prod"}, True),
    ("{header: x-env, any_of: [dev, qa]}", {"x-env": "prod"}, False),
    ("{header: x-env, present: true}", {"x-env": ""}, True),
    ("{header: x-env, present: true}", {}, False),
    ("{header: x-env, present: false}", {}, True),
    ("{header: x-env, not_equals: prod}", {"x-env": "prod"}, False),
    ("{header: x-env, not_equals: prod}", {}, True),
    ("{header: x-env, not_prefix: dev}", {"x-env": "prod"}, True),
    ("{header: x-env, not_any_of: [prod]}", {"x-env": "prod"}, False),
]


@pytest.mark.parametrize(("cond", "headers", "expected"), HEADERS)
def test_header_conditions(cond: str, headers: dict[str, str], expected: bool) -> None:
    d = decide(req(headers=headers), ANON, f"rules: [{{name: r, action: allow, when: [{cond}]}}]\n")
    assert d.allowed is expected


def test_all_when_conditions_must_hold() -> None:
    f = (
        "rules: [{name: r, action: allow, "
        "when: [{header: a, present: true}, {header: b, present: true}]}]\n"
    )
    assert decide(req(headers={"a": "1", "b": "2"}), ANON, f).allowed
    assert not decide(req(headers={"a": "1"}), ANON, f).allowed


# --- host selection -------------------------------------------------------------------------


def _files_for(host: str) -> tuple[str, ...] | None:
    p = policy(
        "hosts: [shop.example.com]\nrules: [{name: exact, action: allow}]\n",
        "hosts: ['*.svc.cluster.local']\nrules: [{name: suffix, action: allow}]\n",
        "hosts: ['*.example.com', api.test]\nrules: [{name: wide, action: allow}]\n",
        names=["exact.yaml", "suffix.yaml", "wide.yaml"],
    )
    canonical = normalize_host(host)  # as authz.wire.inbound does, once per check
    assert canonical is not None
    hp = p.for_host(canonical)
    return None if hp is None else hp.files


@pytest.mark.parametrize(
    ("host", "files"),
    [
        ("shop.example.com", ("exact.yaml", "wide.yaml")),
        ("SHOP.Example.COM", ("exact.yaml", "wide.yaml")),
        ("shop.example.com:8443", ("exact.yaml", "wide.yaml")),
        ("other.example.com", ("wide.yaml",)),
        ("a.b.example.com", ("wide.yaml",)),
        ("example.com", None),
        ("orders.shop.svc.cluster.local", ("suffix.yaml",)),
        ("svc.cluster.local", None),
        ("api.test", ("wide.yaml",)),
        ("x.api.test", None),
        ("evil-example.com", None),
        ("", None),
    ],
)
def test_host_selection(host: str, files: tuple[str, ...] | None) -> None:
    assert _files_for(host) == files


def test_hostless_file_applies_everywhere() -> None:
    p = policy(
        "hosts: [a.test]\nrules: [{name: a, action: deny}]\n",
        "rules: [{name: all, action: allow}]\n",
    )
    hp = p.for_host("b.test")
    assert hp is not None and evaluate(hp, req(host="b.test"), ANON).reason == "all"
    hp = p.for_host("a.test")
    assert hp is not None and evaluate(hp, req(host="a.test"), ANON).reason == "a"


def test_authentication_merged_per_host() -> None:
    a = """
    hosts: [a.test]
    authentication:
      mtls: {trust_domains: [td-a]}
      jwt: [{issuer: https://i, jwks_uri: https://i/jwks}]
    """
    b = """
    authentication:
      mtls: {trust_domains: [td-b]}
      jwt: [{issuer: https://i, jwks_uri: https://i/jwks}, {issuer: https://j, discovery: true}]
    """
    c = "hosts: [c.test]\nrules: [{name: r, action: allow}]\n"
    p = policy(a, b, c)
    hp = p.for_host("a.test")
    assert hp is not None
    assert hp.authentication.trust_domains == frozenset({"td-a", "td-b"})
    assert [pr.issuer for pr in hp.authentication.jwt_providers] == ["https://i", "https://j"]
    assert [pr.issuer for pr in p.jwt_providers] == ["https://i", "https://j"]
    p2 = policy(c)
    hp2 = p2.for_host("c.test")
    assert hp2 is not None and hp2.authentication == Authentication()


def test_host_policies_are_shared_not_per_host_name() -> None:
    p = policy("hosts: ['*.example.com']\nrules: [{name: r, action: allow}]\n")
    first = p.for_host("a.example.com")
    assert all(p.for_host(f"h{i}.example.com") is first for i in range(1000))
