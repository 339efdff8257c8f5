"""The second batch of the language, field by field, with each `not_` form (issue 17):
`from: api_keys`, `methods: ["*"]`, `when` on `query`, `context` and `api_key_label`, path
captures with `equals_capture`, and trust-domain aliases. Policies are YAML through the real
loader; requests and identities are built as wire/inbound and identity build them."""

from __future__ import annotations

import textwrap
from types import MappingProxyType
from typing import Any

import pytest

from authz.errors import PolicyError
from authz.identity.apikeys import key_hash
from authz.model import ApiKeyUser, Identity, Request
from authz.policy import PolicySet, build_policy_set, evaluate
from authz.request.paths import normalize_path
from tests.unit.policy.conftest import ANON, user, workload

KEYS = f"""
keys:
  - {{id: acme-1, sha256: {key_hash("acme")}, labels: {{tier: gold, tenant: acme}}}}
  - {{id: beta-1, sha256: {key_hash("beta")}, labels: {{tier: bronze}}}}
"""

AUTH = """
authentication:
  jwt: [{issuer: https://id.example.com, jwks: {keys: [{kty: oct, k: AAAA}]}}]
  api_keys:
    - {name: partners, from: [{header: x-api-key}], keys_file: partners.keys.yaml}
"""


def compile_(rules: str, auth: str = AUTH) -> PolicySet:
    text = textwrap.dedent(auth) + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return build_policy_set(
        [("/policies/p.yaml", text, "/policies")], [("/policies/partners.keys.yaml", KEYS)]
    )


def key_identity(policy_set: PolicySet, key_id: str) -> ApiKeyUser:
    (provider,) = policy_set.for_host("h").authentication.api_key_providers  # type: ignore[union-attr]
    key = next(k for k in provider.keys.values() if k.id == key_id)
    return ApiKeyUser(provider.name, key)


def decide(
    policy_set: PolicySet,
    raw: str = "/",
    *,
    method: str = "GET",
    identity: Identity = ANON,
    context: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    path, query = normalize_path(raw)
    request = Request(
        method=method,
        path=path,
        host="h",
        raw_path=raw,
        query=query,
        headers=headers or {},
        context=MappingProxyType(context or {}),
    )
    decision = evaluate(policy_set.for_host("h"), request, identity)
    return decision.reason if decision.allowed else f"deny {decision.status}"


def with_key(policy_set: PolicySet, key_id: str, **kw: Any) -> Identity:
    return Identity(api_key=key_identity(policy_set, key_id), **kw)


# --- from: api_keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "key", "expected"),
    [
        ('["partners/acme-1"]', "acme-1", "r"),
        ('["partners/acme-1"]', "beta-1", "deny 403"),
        ('["partners/*"]', "beta-1", "r"),
        ('["*"]', "beta-1", "r"),
        ('["*/acme-1"]', "acme-1", "r"),
        ('["partners/*"]', None, "deny 401"),
    ],
)
def test_api_keys(patterns: str, key: str | None, expected: str) -> None:
    p = compile_(f"- {{name: r, action: allow, from: [{{api_keys: {patterns}}}]}}")
    identity = with_key(p, key) if key else ANON
    assert decide(p, identity=identity) == expected


def test_not_api_keys() -> None:
    p = compile_('- {name: r, action: allow, from: [{not_api_keys: ["partners/beta-1"]}]}')
    assert decide(p, identity=with_key(p, "acme-1")) == "r"
    assert decide(p, identity=with_key(p, "beta-1")) == "deny 403"
    assert decide(p) == "r"  # no key at all is not beta-1


def test_a_key_counts_as_authenticated() -> None:
    p = compile_("- {name: r, action: allow, from: [{authenticated: true}]}")
    assert decide(p, identity=with_key(p, "beta-1")) == "r"
    assert decide(p) == "deny 403"


def test_the_challenge_names_the_provider_when_a_key_would_help() -> None:
    p = compile_('- {name: r, action: allow, from: [{api_keys: ["partners/*"]}]}')
    path, query = normalize_path("/")
    decision = evaluate(p.for_host("h"), Request("GET", path, "h", query=query), ANON)
    assert (decision.status, decision.challenge) == (401, 'ApiKey realm="partners"')
    both = compile_(
        """
        - {name: k, action: allow, from: [{api_keys: ["partners/*"]}]}
        - {name: j, action: allow, from: [{issuers: [https://id.example.com]}]}
        """
    )
    decision = evaluate(both.for_host("h"), Request("GET", path, "h", query=query), ANON)
    assert decision.challenge == 'Bearer, ApiKey realm="partners"'


# --- methods: ["*"] ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PROPFIND"])
def test_method_star_is_any_method_and_not_star_is_none(method: str) -> None:
    p = compile_(
        """
        - {name: any, action: allow, to: [{methods: ["*"], paths: [/a]}]}
        - {name: none, action: allow, to: [{not_methods: ["*"], paths: [/b]}]}
        """
    )
    assert decide(p, "/a", method=method) == "any"
    assert decide(p, "/b", method=method) == "deny 403"


# --- when: query ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "raw", "holds"),
    [
        ("{query: format, equals: csv}", "/r?format=csv", True),
        ("{query: format, equals: csv}", "/r?format=pdf", False),
        ("{query: format, equals: csv}", "/r", False),
        # An allow rule holds only under every reading: each value of a repeated parameter.
        ("{query: format, equals: csv}", "/r?format=pdf&format=csv", False),
        ("{query: format, equals: csv}", "/r?format=csv&f%6Frmat=csv", True),
        ("{query: format, equals: csv}", "/r?%66ormat=%63sv", True),  # decoded
        ("{query: format, equals: a b}", "/r?format=a+b", True),
        ("{query: format, not_equals: csv}", "/r?format=pdf", True),
        ("{query: format, not_equals: csv}", "/r?format=pdf&format=csv", False),
        ("{query: format, not_equals: csv}", "/r", True),
        ("{query: format, any_of: [csv, tsv]}", "/r?format=tsv", True),
        ("{query: format, not_any_of: [csv, tsv]}", "/r?format=tsv", False),
        ("{query: debug, present: true}", "/r?debug", True),
        ("{query: debug, present: true}", "/r?debug=", True),
        ("{query: debug, present: false}", "/r?x=1", True),
        ("{query: debug, present: true}", "/r?de%62ug=1", True),
    ],
)
def test_query(condition: str, raw: str, holds: bool) -> None:
    p = compile_(f"- {{name: r, action: allow, when: [{condition}]}}")
    assert decide(p, raw) == ("r" if holds else "deny 403")


def test_a_parameter_spelled_two_ways_is_one_parameter() -> None:
    p = compile_("- {name: r, action: allow, when: [{query: abc, not_equals: evil}]}")
    assert decide(p, "/?abc=fine&a%62c=evil") == "deny 403"


# --- when: context -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        ("{context: zone, equals: internal}", {"zone": "internal"}, True),
        ("{context: zone, equals: internal}", {"zone": "public"}, False),
        ("{context: zone, equals: internal}", {}, False),
        ("{context: zone, not_equals: internal}", {"zone": "public"}, True),
        ("{context: zone, not_equals: internal}", {}, True),
        ("{context: zone, any_of: [a, b]}", {"zone": "b"}, True),
        ("{context: zone, not_any_of: [a, b]}", {"zone": "b"}, False),
        ("{context: zone, present: true}", {"zone": ""}, True),
        ("{context: zone, present: false}", {}, True),
    ],
)
def test_context(condition: str, context: dict[str, str], holds: bool) -> None:
    p = compile_(f"- {{name: r, action: allow, when: [{condition}]}}")
    assert decide(p, context=context) == ("r" if holds else "deny 403")


# --- when: api_key_label -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "key", "holds"),
    [
        ("{api_key_label: tier, equals: gold}", "acme-1", True),
        ("{api_key_label: tier, equals: gold}", "beta-1", False),
        ("{api_key_label: tier, equals: gold}", None, False),
        ("{api_key_label: tier, not_equals: gold}", "beta-1", True),
        ("{api_key_label: tier, any_of: [gold, silver]}", "acme-1", True),
        ("{api_key_label: tier, not_any_of: [gold, silver]}", "acme-1", False),
        ("{api_key_label: tenant, present: true}", "acme-1", True),
        ("{api_key_label: tenant, present: false}", "beta-1", True),
    ],
)
def test_api_key_label(condition: str, key: str | None, holds: bool) -> None:
    p = compile_(f"- {{name: r, action: allow, when: [{condition}]}}")
    identity = with_key(p, key) if key else ANON
    assert decide(p, identity=identity).startswith("r" if holds else "deny")


def test_a_label_condition_alone_asks_for_a_key() -> None:
    p = compile_("- {name: r, action: allow, when: [{api_key_label: tier, equals: gold}]}")
    assert decide(p) == "deny 401"


# --- path captures -------------------------------------------------------------------------

TENANT_RULE = """
- name: r
  action: allow
  to: [{paths: ["/t/{tenant}/{**}"]}]
  when: [{claim: tenant_id, equals_capture: tenant}]
"""


@pytest.mark.parametrize(
    ("raw", "tenant", "holds"),
    [
        ("/t/acme/x", "acme", True),
        ("/t/acme/", "acme", True),
        ("/t/beta/x", "acme", False),
        ("/t/%61cme/x", "acme", True),  # the normalized path: %61 is a
        ("/t/a%20b/x", "a b", True),  # decoded
        ("/t/x/../beta/x", "acme", False),
        ("/t/ACME/x", "acme", False),
        ("/t/acme;v=1/x", "acme", False),  # an allow sees the segment as sent
    ],
)
def test_claim_equals_capture(raw: str, tenant: str, holds: bool) -> None:
    p = compile_(TENANT_RULE)
    identity = Identity(user=user(tenant_id=tenant))
    assert decide(p, raw, identity=identity) == ("r" if holds else "deny 403")


def test_not_equals_capture() -> None:
    p = compile_(
        """
        - name: r
          action: allow
          to: [{paths: ["/t/{tenant}"]}]
          when: [{claim: tenant_id, not_equals_capture: tenant}]
        """
    )
    assert decide(p, "/t/beta", identity=Identity(user=user(tenant_id="acme"))) == "r"
    assert decide(p, "/t/acme", identity=Identity(user=user(tenant_id="acme"))) == "deny 403"


@pytest.mark.parametrize(
    ("condition", "raw", "extra", "holds"),
    [
        (
            "{header: x-tenant, equals_capture: tenant}",
            "/t/acme",
            {"headers": {"x-tenant": "acme"}},
            True,
        ),
        (
            "{header: x-tenant, equals_capture: tenant}",
            "/t/acme",
            {"headers": {"x-tenant": "beta"}},
            False,
        ),
        ("{query: tenant, equals_capture: tenant}", "/t/acme?tenant=acme", {}, True),
        ("{query: tenant, equals_capture: tenant}", "/t/acme?tenant=beta", {}, False),
    ],
)
def test_header_and_query_equal_a_capture(
    condition: str, raw: str, extra: dict[str, Any], holds: bool
) -> None:
    p = compile_(
        f'- {{name: r, action: allow, to: [{{paths: ["/t/{{tenant}}"]}}], when: [{condition}]}}'
    )
    assert decide(p, raw, **extra) == ("r" if holds else "deny 403")


def test_api_key_label_equals_a_capture() -> None:
    p = compile_(
        '- {name: r, action: allow, to: [{paths: ["/t/{tenant}"]}], '
        "when: [{api_key_label: tenant, equals_capture: tenant}]}"
    )
    assert decide(p, "/t/acme", identity=with_key(p, "acme-1")) == "r"
    assert decide(p, "/t/beta", identity=with_key(p, "acme-1")) == "deny 403"
    assert decide(p, "/t/beta", identity=with_key(p, "beta-1")) == "deny 403"  # no label


def test_a_deny_rule_binds_the_path_with_params_cut() -> None:
    p = compile_(
        """
        - name: not-your-tenant
          action: deny
          to: [{paths: ["/t/{tenant}/{**}"]}]
          when: [{claim: tenant_id, not_equals_capture: tenant}]
        - {name: open, action: allow}
        """
    )
    identity = Identity(user=user(tenant_id="acme"))
    assert decide(p, "/t/beta;x=1/y", identity=identity) == "deny 403"
    assert decide(p, "/t/acme/y", identity=identity) == "open"


@pytest.mark.parametrize(
    "rule",
    [
        # used, but a path of the rule does not bind it
        '{name: r, action: allow, to: [{paths: ["/t/{tenant}", /other]}], '
        "when: [{claim: t, equals_capture: tenant}]}",
        # used, but an entry has no paths at all
        '{name: r, action: allow, to: [{paths: ["/t/{tenant}"]}, {methods: [GET]}], '
        "when: [{claim: t, equals_capture: tenant}]}",
        # used with no `to`
        "{name: r, action: allow, when: [{claim: t, equals_capture: tenant}]}",
        # a typo
        '{name: r, action: allow, to: [{paths: ["/t/{tenant}"]}], '
        "when: [{claim: t, equals_capture: tennant}]}",
    ],
)
def test_a_capture_used_must_be_bound_by_every_path(rule: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_(f"- {rule}")
    assert "/policies/p.yaml:" in str(caught.value)
    assert "capture" in str(caught.value)


def test_rules_without_captures_are_indexed_as_before() -> None:
    p = compile_('- {name: r, action: allow, to: [{paths: ["/t/{tenant}"]}]}')
    (rule,) = p.rules
    assert rule.index_keys == frozenset({(None, "t")})


# --- trust-domain aliases ------------------------------------------------------------------

ALIASES = """
authentication:
  mtls: {trust_domains: [new.example], trust_domain_aliases: [old.example]}
"""


@pytest.mark.parametrize(
    ("pattern", "peer", "holds"),
    [
        ("new.example/ns/shop/sa/frontend", "spiffe://old.example/ns/shop/sa/frontend", True),
        ("new.example/ns/shop/sa/frontend", "spiffe://new.example/ns/shop/sa/frontend", True),
        (
            "spiffe://old.example/ns/shop/sa/frontend",
            "spiffe://new.example/ns/shop/sa/frontend",
            True,
        ),
        ("new.example/ns/shop/sa/frontend", "spiffe://new.example/ns/shop/sa/other", False),
        ("new.example/ns/shop/*", "spiffe://old.example/ns/shop/sa/x", True),
        ("new.example/ns/shop/sa/frontend", "spiffe://third.example/ns/shop/sa/frontend", False),
    ],
)
def test_trust_domain_aliases(pattern: str, peer: str, holds: bool) -> None:
    p = compile_(f'- {{name: r, action: allow, from: [{{principals: ["{pattern}"]}}]}}', ALIASES)
    identity = Identity(workload=workload(peer))
    assert decide(p, identity=identity) == ("r" if holds else "deny 403")
    negated = compile_(
        f'- {{name: r, action: allow, from: [{{not_principals: ["{pattern}"]}}]}}', ALIASES
    )
    assert decide(negated, identity=identity) == ("deny 403" if holds else "r")


def test_aliases_need_trust_domains() -> None:
    with pytest.raises(PolicyError, match="trust_domain_aliases"):
        compile_(
            "- {name: r, action: allow}", "authentication: {mtls: {trust_domain_aliases: [a]}}\n"
        )


# --- API-key providers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("providers", "fragment"),
    [
        (
            "[{name: partners, from: [{header: x-api-key}], keys_file: missing.keys.yaml}]",
            "not a key file",
        ),
        ("[{name: partners, from: [{header: x-api-key}], keys_file: p.yaml}]", "keys.yaml"),
        (
            "[{name: partners, from: [{header: x-api-key}], keys_file: ../x.keys.yaml}]",
            "policy directory",
        ),
        (
            "[{name: partners, from: [{header: x-api-key}], keys_file: /etc/x.keys.yaml}]",
            "policy directory",
        ),
        ("[{name: partners, from: [{header: x-api-key}]}]", "keys_file"),
        ("[{name: partners, keys_file: partners.keys.yaml}]", "from"),
        ("[{name: 'a b', from: [{header: x-api-key}], keys_file: partners.keys.yaml}]", "name"),
        ("[{name: p, from: [{query: k, prefix: x}], keys_file: partners.keys.yaml}]", "prefix"),
        (
            "[{name: p, from: [{header: a}], keys_file: partners.keys.yaml}, "
            "{name: p, from: [{header: b}], keys_file: partners.keys.yaml}]",
            "also",
        ),
    ],
)
def test_bad_api_key_providers(providers: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_("- {name: r, action: allow}", f"authentication: {{api_keys: {providers}}}\n")
    assert fragment in str(caught.value)


def test_provider_names_are_unique_across_the_set() -> None:
    auth = (
        "authentication: {api_keys: "
        "[{name: p, from: [{header: a}], keys_file: partners.keys.yaml}]}\n"
    )
    with pytest.raises(PolicyError, match="also"):
        build_policy_set(
            [
                (
                    "/policies/a.yaml",
                    auth + "hosts: [a]\nrules: [{name: r1, action: allow}]\n",
                    "/policies",
                ),
                (
                    "/policies/b.yaml",
                    auth + "hosts: [b]\nrules: [{name: r2, action: allow}]\n",
                    "/policies",
                ),
            ],
            [("/policies/partners.keys.yaml", KEYS)],
        )
