"""The decision cache: hits repeat the verdict under a new id, and never change a decision.

The property test runs random request sequences through two engines over the same policy
store, keys and clock, one with the cache and one without, with clock ticks (tokens expire or
become valid), policy reloads and key rotations in between: every verdict must be the same.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from authz.config import HeaderNames, Settings
from authz.decision_cache import DecisionCache
from authz.engine import Engine
from authz.identity.introspection import Introspector
from authz.identity.jwks import KeySet, parse_jwks
from authz.identity.sources import ServiceResolver
from authz.model import FROM_CACHE, Decision, Evidence, Request, TokenCheck, Verdict
from authz.policy import PolicySet, PolicyStore, build_policy_set
from authz.policy.language.spec import JwtProvider
from tests.support.certs import make_pki
from tests.support.tokens import SigningKey, jwks, make_key

ISSUER = "https://id.example.com"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
T0 = float(int(time.time()))

POLICY_A = f"""\
hosts: [shop.example.com, "*.shop.example.com"]
authentication:
  mtls: {{trust_domains: [cluster.local]}}
  jwt:
    - issuer: {ISSUER}
      audiences: [api]
      jwks_uri: https://id.example.com/jwks
      from:
        - {{header: authorization, prefix: "Bearer "}}
        - {{query: access_token}}
        - {{cookie: tok}}
      claims_to_headers: {{sub: x-user-id}}
rules:
  - name: no-admin
    action: deny
    to: [{{paths: ["/admin/{{**}}"]}}]
  - name: read
    action: allow
    from: [{{issuers: [{ISSUER}]}}]
    to: [{{methods: [GET, HEAD], paths: ["/api/{{**}}"]}}]
    when: [{{claim: scope, contains: read}}]
  - name: mesh
    action: allow
    from: [{{principals: ["{FRONTEND}"]}}]
    to: [{{ports: [8443]}}]
  - name: office
    action: allow
    from: [{{ip_blocks: [10.0.0.0/8]}}]
    to: [{{paths: [/office]}}]
    when: [{{header: x-team, equals: blue}}]
  - name: watch
    action: audit
    to: [{{paths: ["/api/{{**}}"]}}]
"""

# The same shape, deciding differently: a reload must never be answered from A's verdicts.
POLICY_B = (
    POLICY_A.replace("contains: read", "contains: write")
    .replace("equals: blue", "equals: red")
    .replace("ports: [8443]", "ports: [8080]")
)


def policy_set(text: str) -> PolicySet:
    return build_policy_set([("shop.yaml", text, "/policies")])


@dataclass
class Keys:
    """A key source whose key set the test replaces (the `KeyLookup` protocol)."""

    current: KeySet | None
    refetches: int = 0

    def key_set(self, provider: JwtProvider) -> KeySet | None:
        return self.current

    def refetch(self, provider: JwtProvider) -> None:
        self.refetches += 1  # nothing to wait for: the check decides with the keys it has


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


K1 = make_key("ES256", kid="k1")
K2 = make_key("ES256", kid="k2")


def token(key: SigningKey = K1, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api",
        "scope": "read write",
        "iat": int(T0),
        "exp": int(T0 + 3600),
    }
    claims.update(overrides)
    return key.sign({k: v for k, v in claims.items() if v is not None})


TOKENS: dict[str, str | None] = {
    "none": None,
    "read": token(scope="read"),
    "write": token(scope="write"),
    "bob": token(sub="bob"),
    "k2": token(K2),  # valid only while k2 is in the key set
    "soon": token(exp=int(T0 + 30)),  # refused from T0 + 90 (60 s skew)
    "later": token(nbf=int(T0 + 120)),  # accepted from T0 + 60
    "no-exp": token(exp=None),
    "wrong-aud": token(aud="other"),
    "garbage": "x.y.z",
}

KEY_SETS = {
    "k1": lambda: parse_jwks(jwks(K1)),
    "k1+k2": lambda: parse_jwks(jwks(K1, K2)),
    "k2": lambda: parse_jwks(jwks(K2)),
    "none": lambda: None,
}


def make_request(
    *,
    host: str = "shop.example.com",
    method: str = "GET",
    path: str = "/api/orders",
    principal: str = "",
    token_name: str = "none",
    where: str = "header",
    team: str | None = None,
    ip: str | None = "10.1.2.3",
    port: int | None = 8443,
    extra: Mapping[str, str] | None = None,
) -> Request:
    headers: dict[str, str] = dict(extra or {})
    query = ""
    value = TOKENS[token_name]
    if value is not None:
        if where in ("header", "header+query"):
            headers["authorization"] = f"Bearer {value}"
        if where in ("query", "header+query"):
            query = "access_token=" + urllib.parse.quote(value)
        if where == "cookie":
            headers["cookie"] = f"theme=dark; tok={value}"
        if where == "two":  # two different tokens: refused as malformed
            headers["authorization"] = f"Bearer {value}"
            query = "access_token=" + urllib.parse.quote(str(TOKENS["bob"]))
    if team is not None:
        headers["x-team"] = team
    return Request(
        method=method,
        path=path,
        host=host,
        raw_path=path,
        query=query,
        headers=headers,
        source_ip=ip,
        destination_port=port,
        peer_principal=principal,
    )


@dataclass
class World:
    store: PolicyStore
    keys: Keys
    clock: Clock
    cached: Engine
    plain: Engine
    headers: HeaderNames = field(default_factory=HeaderNames)


# The policies name no introspection endpoint, so no engine here ever calls it: one client for
# all of them (each new one loads the system's CA bundle, about 30 ms: most of a property run).
INTROSPECTOR = Introspector()


def world(*, cache: DecisionCache | None = None) -> World:
    store = PolicyStore(policy_set(POLICY_A))
    keys = Keys(KEY_SETS["k1"]())
    clock = Clock()

    def engine(decision_cache: DecisionCache | bool) -> Engine:
        resolver = ServiceResolver(Settings(), keys, introspection=INTROSPECTOR)
        return Engine(store, resolver, clock=clock, decision_cache=decision_cache)

    return World(store, keys, clock, engine(cache if cache is not None else True), engine(False))


def comparable(verdict: Verdict, names: HeaderNames) -> tuple[Any, ...]:
    """Everything in a verdict but its decision id (which must differ per check)."""
    headers = tuple((n, "<id>" if n == names.decision_id else v) for n, v in verdict.headers_to_set)
    return (
        verdict.decision,
        verdict.policy_revision,
        verdict.principal,
        verdict.request_principal,
        headers,
        verdict.headers_to_remove,
        verdict.query_parameters_to_remove,
    )


# --- pinned behaviour ---------------------------------------------------------------------------


def test_a_repeated_request_is_a_hit_with_a_new_decision_id() -> None:
    w = world()
    request = make_request(token_name="read")
    first = w.cached.check(request)
    second = w.cached.check(request)
    assert first.decision.allowed and first.decision.reason == "read"
    assert w.cached.decision_cache is not None and w.cached.decision_cache.hits == 1
    assert comparable(first, w.headers) == comparable(second, w.headers)
    assert first.decision_id != second.decision_id
    assert dict(second.headers_to_set)[w.headers.decision_id] == second.decision_id
    assert dict(second.headers_to_set)["x-user-id"] == "alice"


def test_a_repeat_carries_every_field_but_the_id_and_the_token_judgement() -> None:
    # The engine builds a repeat field by field (faster than dataclasses.replace): a field
    # added to Verdict must not be dropped on a hit.
    w = world()
    names = w.headers
    verdict = Verdict(
        Decision(True, 200, "read", rule="read"),
        "old-id",
        "rev",
        "p",
        "rp",
        "ak",
        ((names.decision_id, "old-id"), ("x-user-id", "alice")),
        ("x-drop",),
        ("token",),
        Evidence("verified"),
        (("retry-after", "1"),),
        TokenCheck(cached=False),
    )
    again = w.cached._repeat(verdict)
    assert again.decision_id != "old-id"
    assert again.headers_to_set == ((names.decision_id, again.decision_id), ("x-user-id", "alice"))
    assert again.token_check is FROM_CACHE
    changed = {"decision_id", "headers_to_set", "token_check"}
    for f in fields(Verdict):
        if f.name not in changed:
            assert getattr(again, f.name) is getattr(verdict, f.name), f.name


def test_an_expired_token_is_refused_on_what_would_be_a_hit() -> None:
    w = world()
    request = make_request(token_name="soon")
    assert w.cached.check(request).decision.allowed
    w.clock.now = T0 + 90  # exp + 60 s skew
    refused = w.cached.check(request)
    assert not refused.decision.allowed
    assert (refused.decision.status, refused.decision.reason) == (401, "jwt_expired")


def test_a_reload_is_never_answered_from_the_old_set() -> None:
    w = world()
    request = make_request(token_name="read")
    assert w.cached.check(request).decision.allowed
    w.store.swap(policy_set(POLICY_B))  # `read` now needs scope write
    after = w.cached.check(request)
    assert not after.decision.allowed and after.decision.reason == "no_matching_rule"
    assert w.cached.decision_cache is not None and w.cached.decision_cache.hits == 0


def test_a_key_rotation_is_never_answered_from_the_old_keys() -> None:
    w = world()
    request = make_request(token_name="read")
    assert w.cached.check(request).decision.allowed
    w.keys.current = KEY_SETS["k2"]()  # k1 removed from the JWKS
    after = w.cached.check(request)
    assert not after.decision.allowed
    assert after.decision.reason == "jwt_unknown_kid"


def test_refused_tokens_are_not_cached_so_each_still_asks_for_a_refetch() -> None:
    w = world()
    request = make_request(token_name="k2")
    for _ in range(3):
        assert w.cached.check(request).decision.reason == "jwt_unknown_kid"
    assert w.keys.refetches == 3
    assert w.cached.decision_cache is not None and len(w.cached.decision_cache) == 0


def test_the_key_holds_exactly_what_the_host_reads() -> None:
    host_policy = policy_set(POLICY_A).for_host("shop.example.com")
    assert host_policy is not None
    plan = host_policy.key_plan
    assert plan.headers == ("authorization", "cookie", "x-team")
    assert plan.query and plan.port and plan.source_ip
    bare = build_policy_set(
        [("a.yaml", "hosts: [a.example]\nrules: [{name: a, action: allow}]\n", "/p")]
    ).for_host("a.example")
    assert bare is not None
    assert bare.key_plan.headers == ()  # no provider: no token is read
    assert not (bare.key_plan.query or bare.key_plan.port or bare.key_plan.source_ip)


def test_headers_the_host_does_not_read_do_not_split_the_cache() -> None:
    w = world()
    w.cached.check(make_request(token_name="read", extra={"user-agent": "a", "x-request-id": "1"}))
    w.cached.check(make_request(token_name="read", extra={"user-agent": "b", "x-request-id": "2"}))
    assert w.cached.decision_cache is not None and w.cached.decision_cache.hits == 1


def test_bounded_in_entries_and_bytes() -> None:
    cache = DecisionCache(max_entries=50, max_bytes=40_000)
    w = world(cache=cache)
    for i in range(500):
        w.cached.check(make_request(path=f"/api/orders/{i}", token_name="read"))
        assert len(cache) <= 50 and cache.bytes <= 40_000
    assert len(cache) > 0
    small = DecisionCache(max_entries=1000, max_bytes=10_000)
    w = world(cache=small)
    for i in range(200):
        w.cached.check(make_request(path=f"/api/orders/{i}", token_name="read"))
        assert small.bytes <= 10_000
    assert 0 < len(small) < 200


def test_a_peer_certificate_verified_here_is_not_cached(tmp_path: Path) -> None:
    # Its validity depends on the time: the identity layer checks it (and caches it) itself.
    pki = make_pki(tmp_path)
    store = PolicyStore(policy_set(POLICY_A))
    settings = Settings(ca_bundle=pki.ca.read_text())
    engine = Engine(store, ServiceResolver(settings, Keys(None)))
    pem = urllib.parse.quote(pki.client.cert.read_text())
    request = replace(make_request(principal="", port=8443), peer_certificate=pem)
    for _ in range(2):
        verdict = engine.check(request)
        assert verdict.decision.allowed and verdict.principal == FRONTEND
    assert engine.decision_cache is not None and len(engine.decision_cache) == 0
    # Without a CA bundle the certificate is not read, and the check is cached.
    plain = Engine(store, ServiceResolver(Settings(), Keys(None)))
    plain.check(replace(request, peer_principal=FRONTEND))
    assert plain.decision_cache is not None and len(plain.decision_cache) == 1


# --- the property -------------------------------------------------------------------------------

# Values repeat to weight the draw towards requests the policy allows (so there is something to
# lose) and towards the key set that verifies most tokens.
FIELDS: dict[str, list[Any]] = {
    "host": ["shop.example.com"] * 4 + ["a.shop.example.com", "other.example", "SHOP.example.com"],
    "method": ["GET", "GET", "HEAD", "POST"],
    "path": [
        "/api/orders",
        "/api/orders",
        "/api/orders;x=1",
        "/admin/x",
        "/admin;p=1/x",
        "/office",
    ],
    "principal": ["", "", FRONTEND, "spiffe://evil.example/ns/shop/sa/frontend"],
    "token_name": [*sorted(TOKENS), "read", "read", "soon", "later"],
    "where": ["header", "header", "header", "query", "cookie", "header+query", "two"],
    "team": [None, "blue", "blue", "red"],
    "ip": ["10.1.2.3", "10.1.2.3", "192.168.0.1", None],
    "port": [8443, 8443, 8080, None],
    "extra": [None, {"user-agent": "x"}, {"x-request-id": "1"}],
}
request_args = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in FIELDS.items()})
# A few requests per example, checked again and again, and variants that differ from one of
# them in a single field: so hits happen, and so do near misses that must not be hits.
check = st.tuples(st.just("check"), st.integers(0, 7))
vary = st.tuples(st.just("vary"), st.integers(0, 7), st.sampled_from(sorted(FIELDS)), request_args)
steps = st.one_of(
    check,
    check,
    check,
    vary,
    vary,
    st.tuples(st.just("tick"), st.sampled_from([1.0, 30.0, 61.0, 100.0])),
    st.tuples(st.just("reload"), st.sampled_from(["A", "B"])),
    st.tuples(st.just("keys"), st.sampled_from(["k1", "k1", "k1+k2", "k2", "none"])),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(request_args, min_size=1, max_size=3), st.lists(steps, min_size=5, max_size=60))
def test_the_cache_never_changes_a_decision(
    pool: list[dict[str, Any]], program: list[tuple[Any, ...]]
) -> None:
    w = world()
    ids: set[str] = set()
    for step in program:
        op, arg = step[0], step[1]
        if op == "tick":
            w.clock.now += arg
            continue
        if op == "reload":
            w.store.swap(policy_set(POLICY_A if arg == "A" else POLICY_B))
            continue
        if op == "keys":
            w.keys.current = KEY_SETS[arg]()
            continue
        args = pool[arg % len(pool)]
        if op == "vary":
            args = {**args, step[2]: step[3][step[2]]}
            pool.append(args)
        request = make_request(**args)
        note(f"{op}: {args}")
        with_cache = w.cached.check(request)
        without = w.plain.check(request)
        assert comparable(with_cache, w.headers) == comparable(without, w.headers)
        assert with_cache.decision_id not in ids
        ids.add(with_cache.decision_id)


ALLOWED_BASES: dict[str, dict[str, Any]] = {
    "read, header": {"token_name": "read"},
    "read, query": {"token_name": "read", "where": "query"},
    "read, cookie": {"token_name": "read", "where": "cookie"},
    "mesh": {"principal": FRONTEND, "path": "/x"},
    "office": {"path": "/office", "team": "blue", "method": "POST"},
}


@pytest.mark.parametrize("base", sorted(ALLOWED_BASES))
def test_no_single_field_change_is_answered_from_an_allowed_entry(base: str) -> None:
    """Each allowed request, then every request that differs from it in one field: the cached
    engine answers each exactly as the uncached one (exhaustive, where the property samples)."""
    args = {**ALLOWED_BASES[base]}
    for name, values in FIELDS.items():
        for value in dict.fromkeys(map(repr, values)):
            w = world()
            first = w.cached.check(make_request(**args))
            assert first.decision.allowed, first
            variant = {**args, name: values[[repr(v) for v in values].index(value)]}
            request = make_request(**variant)
            assert comparable(w.cached.check(request), w.headers) == comparable(
                w.plain.check(request), w.headers
            ), (name, value)


@pytest.mark.parametrize("repeat", [2, 5])
def test_hits_happen_in_a_steady_stream(repeat: int) -> None:
    w = world()
    for _ in range(repeat):
        w.cached.check(make_request(token_name="read"))
        w.cached.check(make_request(principal=FRONTEND))
    assert w.cached.decision_cache is not None
    assert w.cached.decision_cache.hits == 2 * (repeat - 1)
