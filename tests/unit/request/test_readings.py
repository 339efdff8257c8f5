"""One rule for ambiguous requests (docs/policy.md): every reading of a request is kept in the
view, a deny rule (and a rate limit) holds under any reading, an allow rule only under every
reading. One test per reading, each with the spelling that used to get through."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from authz.config import Limits, Settings
from authz.engine import Engine
from authz.errors import InvalidHost, WorkloadRejected
from authz.identity import KeyRegistry
from authz.identity.apikeys import key_hash
from authz.identity.peer import PeerCertificateVerifier, parse_xfcc
from authz.identity.sources import ServiceResolver
from authz.model import ANONYMOUS, Request
from authz.policy import PolicyStore, build_policy_set, evaluate, load_policy_set
from authz.policy.decide.context import RequestContext
from authz.request.headers import header_readings
from authz.request.paths import cut_params, normalize_path, path_readings, target_readings
from authz.request.query import parse_query, spellings
from authz.wire.http import HttpListener, HttpMode
from authz.wire.http import to_request as to_http_request
from authz.wire.view import check_host
from tests.support.certs import make_pki


def decide(policy: str, raw: str, headers: dict[str, str] | None = None, host: str = "h") -> str:
    policy_set = build_policy_set([("p.yaml", policy, ".")])
    path, query = normalize_path(raw)
    request = Request("GET", path, host, raw_path=raw, query=query, headers=headers or {})
    decision = evaluate(policy_set.for_host(host), request, ANONYMOUS)
    return decision.reason if decision.allowed else f"deny {decision.reason}"


# --- the readers ----------------------------------------------------------------------------


def test_the_param_cut_is_per_segment() -> None:
    assert cut_params("/api;v=1/admin;x/y") == "/api/admin/y"
    assert path_readings("/api;v=1/admin") == ("/api;v=1/admin", "/api/admin")
    assert path_readings("/api/admin") == ("/api/admin",)


def test_each_header_element_is_a_reading() -> None:
    assert header_readings(None) == (None,)
    assert header_readings("guest") == ("guest",)
    assert header_readings("guest, admin") == ("guest", "admin")


def test_every_spelling_of_a_query_name_is_one_parameter() -> None:
    raw = "api%5Fkey=a&api_key=b&x=1&api%5fkey=c"
    assert parse_query(raw)["api_key"] == ("a", "b", "c")
    assert spellings(raw, "api_key") == ("api%5Fkey", "api_key", "api%5fkey")


# --- paths: `;params` -----------------------------------------------------------------------

PATHS = """
rules:
  - {name: no-admin, action: deny, to: [{paths: [/api/admin, "/admin/{**}"]}]}
  - {name: json, action: allow, to: [{paths: ["*.json"]}]}
  - {name: not-admin, action: allow, to: [{paths: ["/app/{**}"], not_paths: [/app/admin]}]}
"""


def test_a_param_in_an_earlier_segment_does_not_escape_a_deny() -> None:
    # The cut is per segment: cut at the first `;` only, `/api;v=1/admin` would read `/api`.
    assert decide(PATHS, "/api;v=1/admin") == "deny no-admin"
    assert decide(PATHS, "/admin;a=1/x;b=2") == "deny no-admin"


def test_a_param_does_not_widen_a_suffix_allow() -> None:
    assert decide(PATHS, "/secret/data;.json") == "deny no_matching_rule"
    assert decide(PATHS, "/data/x.json") == "json"
    assert decide(PATHS, "/data/x.json;v=1") == "deny no_matching_rule"


def test_a_param_does_not_widen_a_not_paths_allow() -> None:
    assert decide(PATHS, "/app/admin;jsessionid=1") == "deny no_matching_rule"
    assert decide(PATHS, "/app/orders;jsessionid=1") == "not-admin"


# --- hosts ----------------------------------------------------------------------------------


def test_a_host_pattern_keeps_its_dot() -> None:
    policy = """
rules:
  - {name: sub, action: allow, to: [{hosts: ["*.example.com"]}]}
"""
    assert decide(policy, "/", host="shop.example.com") == "sub"
    assert decide(policy, "/", host="badexample.com") == "deny no_matching_rule"
    assert decide(policy, "/", host="example.com") == "deny no_matching_rule"


@pytest.mark.parametrize(
    "authority",
    ["shop.test.", "Shop.Test.:8080", "shop.test..", "shop.test..:80", "shop..test", ".shop.test"],
)
def test_a_host_envoy_would_route_differently_is_refused(authority: str) -> None:
    """The proxy in front removed the one trailing dot a client may send (Envoy's
    `strip_trailing_host_dot`, nginx's `$host`): a dot still there was a second one."""
    with pytest.raises(InvalidHost):
        check_host(authority, Limits())
    assert check_host("Shop.Test:8080", Limits()) == "shop.test"


# --- headers --------------------------------------------------------------------------------

HEADERS = """
rules:
  - {name: no-guests, action: deny, when: [{header: x-role, equals: guest}]}
  - name: staff
    action: allow
    to: [{paths: [/staff]}]
    when: [{header: x-team, not_equals: contractors}, {header: x-team, present: true}]
  - {name: admins, action: allow, to: [{paths: [/admin]}], when: [{header: x-role, equals: admin}]}
"""


def test_a_header_sent_twice_cannot_defeat_a_deny() -> None:
    assert decide(HEADERS, "/admin", {"x-role": "admin,guest"}) == "deny no-guests"
    assert decide(HEADERS, "/admin", {"x-role": "guest,guest"}) == "deny no-guests"
    assert decide(HEADERS, "/admin", {"x-role": "admin"}) == "admins"


def test_a_header_sent_twice_cannot_pass_a_guard() -> None:
    assert decide(HEADERS, "/staff", {"x-team": "ops"}) == "staff"
    assert decide(HEADERS, "/staff", {"x-team": "ops, contractors"}) == "deny no_matching_rule"
    # An allow needs every element: `admin` twice is admin, `admin` and `x` is not.
    assert decide(HEADERS, "/admin", {"x-role": "admin,admin"}) == "admins"
    assert decide(HEADERS, "/admin", {"x-role": "admin,x"}) == "deny no_matching_rule"


# --- the `:path` pseudo-header --------------------------------------------------------------

PSEUDO = """
rules:
  - {name: no-admin, action: deny, when: [{header: ":path", prefix: /admin}]}
  - {name: no-secret, action: deny, when: [{header: ":path", equals: "/secret?x=1"}]}
  - {name: api, action: allow, when: [{header: ":path", prefix: /api/}]}
"""


def test_a_target_reads_as_sent_and_normalized() -> None:
    assert target_readings("/admin") == ("/admin",)
    assert target_readings("/%61dmin?x=%41") == ("/%61dmin?x=%41", "/admin?x=%41")
    assert target_readings("//a/./b;v=1") == ("//a/./b;v=1", "/a/b;v=1", "/a/b")
    assert target_readings("/a%2Fb") == ("/a%2Fb",)  # refused (invalid_path) before it is read


@pytest.mark.parametrize("raw", ["/%61dmin", "//admin", "/x/../admin", "/./%61dmin/users"])
def test_a_path_condition_deny_holds_for_the_target_as_nginx_passes_it(raw: str) -> None:
    """Forward-auth fills `:path` from `X-Original-URI` (`$request_uri`, as sent); Envoy's
    doors see it normalized. A deny on `:path` holds under either reading."""
    assert decide(PSEUDO, raw, {":path": raw}) == "deny no-admin"
    assert decide(PSEUDO, "/secret?x=1", {":path": "/%73ecret?x=1"}) == "deny no-secret"


def test_a_path_condition_allow_needs_every_reading() -> None:
    assert decide(PSEUDO, "/api/a", {":path": "/api/a"}) == "api"
    assert decide(PSEUDO, "//api/a", {":path": "//api/a"}) == "deny no_matching_rule"
    assert decide(PSEUDO, "/%61pi/a", {":path": "/%61pi/a"}) == "deny no_matching_rule"


def test_forward_auth_and_grpc_deny_the_same_encoded_path() -> None:
    """The same request as nginx (raw target) and Envoy (normalized `:path`) pass it."""
    policy_set = build_policy_set([("p.yaml", PSEUDO, ".")])
    nginx = to_http_request(
        HttpListener(mode=HttpMode.FORWARD_AUTH),
        Limits(),
        method="POST",
        path="/auth",
        query="",
        pairs=[("host", "h"), ("x-original-method", "POST"), ("x-original-uri", "/%61dmin")],
    )
    envoy = Request("POST", "/admin", "h", raw_path="/admin", headers={":path": "/admin"})
    for request in (nginx, envoy):
        decision = evaluate(policy_set.for_host("h"), request, ANONYMOUS)
        assert (decision.allowed, decision.reason) == (False, "no-admin")


# --- query parameters -----------------------------------------------------------------------

QUERY = """
rules:
  - {name: no-debug, action: deny, when: [{query: debug, equals: "1"}]}
  - {name: csv, action: allow, when: [{query: format, equals: csv}]}
"""


def test_a_query_parameter_under_another_spelling_is_the_same_parameter() -> None:
    assert decide(QUERY, "/r?format=csv&de%62ug=1") == "deny no-debug"
    assert decide(QUERY, "/r?format=csv&debug=0&debug=1") == "deny no-debug"
    assert decide(QUERY, "/r?format=csv&%66ormat=pdf") == "deny no_matching_rule"
    assert decide(QUERY, "/r?format=csv") == "csv"


KEYS = """
hosts: [api.example.com]
authentication:
  api_keys:
    - {name: partners, from: [{query: api_key}], keys_file: partners.keys.yaml}
rules:
  - {name: partners, action: allow, from: [{api_keys: ["partners/*"]}]}
"""
GOOD = "good-key-0123456789"


@pytest.fixture
def key_engine(tmp_path: Path) -> Engine:
    (tmp_path / "p.yaml").write_text(KEYS)
    (tmp_path / "partners.keys.yaml").write_text(
        f"keys:\n  - {{id: acme-1, sha256: {key_hash(GOOD)}}}\n"
    )
    return Engine(
        PolicyStore(load_policy_set(str(tmp_path))), ServiceResolver(Settings(), KeyRegistry())
    )


@pytest.mark.parametrize("name", ["api%5Fkey", "api%5fkey", "ap%69_key"])
def test_a_key_under_an_encoded_name_is_removed_under_that_name(
    key_engine: Engine, name: str
) -> None:
    verdict = key_engine.check(
        Request("GET", "/x", "api.example.com", query=f"{name}={GOOD}&page=2")
    )
    assert verdict.decision.allowed
    assert verdict.query_parameters_to_remove == (name,)


def test_a_key_under_two_spellings_is_removed_under_both(key_engine: Engine) -> None:
    query = f"api_key={GOOD}&api%5Fkey={GOOD}"
    verdict = key_engine.check(Request("GET", "/x", "api.example.com", query=query))
    assert verdict.decision.allowed
    assert verdict.query_parameters_to_remove == ("api_key", "api%5Fkey")


def test_a_forward_false_token_under_an_encoded_name_is_removed_under_that_name(
    tmp_path: Path,
) -> None:
    from tests.unit.test_engine import ISSUER, REPO, demo_token, make_engine

    (tmp_path / "jwks.json").write_text((REPO / "policies/demo-jwks.json").read_text())
    (tmp_path / "p.yaml").write_text(
        f"""
authentication:
  jwt:
    - {{issuer: {ISSUER}, audiences: [shop-api], jwks_file: jwks.json, forward: false,
       from: [{{query: access_token}}]}}
rules:
  - {{name: users, action: allow, from: [{{issuers: ["{ISSUER}"]}}]}}
"""
    )
    engine, keys = make_engine(tmp_path)
    try:
        query = f"access%5Ftoken={demo_token()}&page=2"
        verdict = engine.check(Request("GET", "/x", "shop.example.com", query=query))
    finally:
        keys.close()
    assert verdict.decision.allowed, verdict.decision
    assert verdict.query_parameters_to_remove == ("access%5Ftoken",)


# --- peers ----------------------------------------------------------------------------------


def test_an_xfcc_certificate_with_two_uri_sans_is_no_workload() -> None:
    one = parse_xfcc("Hash=ab;URI=spiffe://td/ns/a/sa/b")[-1]
    assert one.principal() == "spiffe://td/ns/a/sa/b"
    two = parse_xfcc("Hash=ab;URI=spiffe://td/ns/a/sa/b;URI=spiffe://td/ns/x/sa/admin")[-1]
    with pytest.raises(WorkloadRejected) as refused:
        two.principal()
    assert refused.value.reason == "peer_certificate_invalid" and refused.value.status == 403


def test_a_verified_certificate_with_two_uri_sans_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    two = pki.authority.issue(
        tmp_path,
        "two",
        common_name="two",
        uri_sans=["spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/x/sa/admin"],
    )
    verifier = PeerCertificateVerifier(pki.ca.read_bytes())
    import time

    one = urllib.parse.quote(pki.client.cert.read_text())
    assert verifier.principal(one, time.time()).startswith("spiffe://")
    with pytest.raises(WorkloadRejected, match="more than one URI SAN"):
        verifier.principal(urllib.parse.quote(two.cert.read_text()), time.time())


# --- rate limits: like a deny, any reading ---------------------------------------------------


def test_a_rate_limit_holds_under_any_reading() -> None:
    policy = """
rate_limits:
  - {name: admin-calls, to: [{paths: [/api/admin]}], key: source_ip, limit: 1, per: minute}
  - {name: guests, when: [{header: x-role, equals: guest}], key: source_ip, limit: 1, per: hour}
rules:
  - {name: open, action: allow}
"""
    host_policy = build_policy_set([("p.yaml", policy, ".")]).for_host("h")
    assert host_policy is not None
    admin, guests = host_policy.rate_limits

    def ctx(raw: str, headers: dict[str, str] | None = None) -> RequestContext:
        path, query = normalize_path(raw)
        request = Request("GET", path, "h", raw_path=raw, query=query, headers=headers or {})
        return RequestContext(request, ANONYMOUS, host_policy.authentication)

    assert admin.matcher.matches(ctx("/api;v=1/admin"))
    assert not admin.matcher.matches(ctx("/api/orders;x=/admin"))
    assert guests.matcher.matches(ctx("/", {"x-role": "admin,guest"}))
    assert not guests.matcher.matches(ctx("/", {"x-role": "admin"}))


def test_a_header_key_counts_under_each_element() -> None:
    from authz.limits import Limiter, LocalCounter

    policy = """
rate_limits:
  - {name: per-tenant, key: "header:x-tenant", limit: 2, per: hour}
rules:
  - {name: open, action: allow}
"""
    host_policy = build_policy_set([("p.yaml", policy, ".")]).for_host("h")
    assert host_policy is not None
    limiter = Limiter(LocalCounter(), clock=lambda: 1000.0)

    def count(tenant: str) -> bool:
        request = Request("GET", "/", "h", headers={"x-tenant": tenant})
        ctx = RequestContext(request, ANONYMOUS, host_policy.authentication)
        plan = limiter.plan(host_policy.rate_limits, ctx)
        return limiter.count(plan, evaluate(host_policy, request, ANONYMOUS)) is None

    # Repeating the header, or adding an element, reaches no fresh counter.
    assert count("acme")
    assert count("acme, acme")
    assert not count("acme,other")
    assert count("other")
