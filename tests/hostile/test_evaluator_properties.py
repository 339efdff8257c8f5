"""Properties of the policy evaluator under hostile requests.

- `evaluate` never raises, whatever the request and identity, and is deterministic;
- a deny rule can never be escaped by another spelling of a path it covers: every spelling
  (escapes of unreserved characters in random case, `./`, `x/../`, doubled slashes, a query, a
  fragment) is either refused as `invalid_path` or denied by that rule, although an
  allow-everything rule sits right beside it.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from authz.errors import InvalidPath
from authz.model import Decision, EndUser, Identity, Request, Workload
from authz.policy import PolicySet, build_policy_set, evaluate
from authz.policy.language.patterns import normalize_host
from authz.request.paths import normalize_path
from tests.hostile._hyp import HOSTILE
from tests.hostile.reference import reference_normalize


def compile_yaml(*texts: str) -> PolicySet:
    return build_policy_set(
        (f"p{i}.yaml", textwrap.dedent(text), "/policies") for i, text in enumerate(texts)
    )


# -- deny rules cannot be escaped ---------------------------------------------------------

ESCAPE_POLICY = """
rules:
  - name: deny-admin
    action: deny
    to: [{paths: [/admin, "/admin/{**}"]}]
  - name: deny-secret
    action: deny
    to: [{paths: ["/api/{*}/secret", "/api/{*}/secret/{**}"]}]
  - name: deny-internal
    action: deny
    to: [{paths: ["/internal*"]}]
  - name: deny-dotenv
    action: deny
    to: [{paths: ["*.env"]}]
  - name: deny-grpc-admin
    action: deny
    to: [{paths: [/admin.v1.Admin/Reset]}]
  - name: allow-everything
    action: allow
"""

# (a normalized path a deny rule covers, that rule's name)
TARGETS = [
    ("/admin", "deny-admin"),
    ("/admin/", "deny-admin"),
    ("/admin/users", "deny-admin"),
    ("/admin/users/7/delete", "deny-admin"),
    ("/api/v1/secret", "deny-secret"),
    ("/api/v1/secret/key", "deny-secret"),
    ("/internal", "deny-internal"),
    ("/internal-tools/run", "deny-internal"),
    ("/app/config.env", "deny-dotenv"),
    ("/admin.v1.Admin/Reset", "deny-grpc-admin"),
]

_NOISE = ["./", "a/../", "zz/../", "%41/../", "/", "//", ".//", "x/y/../../"]


def _encode_char(draw: st.DrawFn, char: str) -> str:
    if not draw(st.booleans()):
        return char
    escape = f"{ord(char):02x}"
    # Random case per hex digit: %2e, %2E, %4A, %4a ...
    return "%" + "".join(d.upper() if draw(st.booleans()) else d for d in escape)


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str, str]:
    """(target, rule, another spelling of target)."""
    target, rule = draw(st.sampled_from(TARGETS))
    segments = target.split("/")[1:]
    out = "/"
    if draw(st.booleans()):
        out += draw(st.sampled_from(["../", "./", "/", "../../", "b/../"]))
    for i, segment in enumerate(segments):
        for _ in range(draw(st.integers(0, 2))):
            out += draw(st.sampled_from(_NOISE))
        out += "".join(_encode_char(draw, c) for c in segment)
        if i < len(segments) - 1:
            out += "/"
    # A query or fragment can hold anything, even what looks like a path.
    if draw(st.booleans()):
        out += "?" + draw(st.sampled_from(["", "a=1", "next=/public", "x=../../public", "%2F"]))
    if draw(st.booleans()):
        out += "#" + draw(st.sampled_from(["", "top", "/../public"]))
    return target, rule, out


_ESCAPE_SET = compile_yaml(ESCAPE_POLICY)


@HOSTILE
@given(spellings())
def test_a_deny_rule_cannot_be_escaped_by_spelling(case: tuple[str, str, str]) -> None:
    target, rule, raw = case
    note(f"raw={raw!r}")
    # The generator only makes spellings of the target (checked against the reference).
    assert reference_normalize(raw)[0] == target
    try:
        path, query = normalize_path(raw)
    except InvalidPath:
        return  # 400 invalid_path: also safe
    request = Request(method="GET", path=path, host="shop.example.com", raw_path=raw, query=query)
    decision = evaluate(_ESCAPE_SET.for_host(request.host), request, Identity())
    assert (decision.allowed, decision.reason) == (False, rule)
    assert decision.status == 403


def test_the_allow_everything_rule_really_allows() -> None:
    """Without this, the property above could pass on a policy that allows nothing."""
    request = Request(method="GET", path="/public/admin", host="shop.example.com")
    decision = evaluate(_ESCAPE_SET.for_host(request.host), request, Identity())
    assert decision.allowed and decision.reason == "allow-everything"


# -- the evaluator never raises and is deterministic --------------------------------------

RICH_POLICY_A = """
hosts: [shop.example.com, "*.svc.cluster.local"]
authentication:
  mtls: {trust_domains: [cluster.local]}
roles:
  reader:
    - {methods: [GET, HEAD], paths: [/api/orders, "/api/orders/{*}"]}
    - {not_methods: [DELETE], paths: ["/api/catalog/{**}"]}
rules:
  - name: no-debug
    action: deny
    to: [{paths: ["/debug/{**}", "*.bak", "/tmp*"]}]
  - name: block-range
    action: deny
    from: [{ip_blocks: [192.0.2.0/24, "2001:db8::/32"]}]
  - name: deny-deletes-unless-admin
    action: deny
    to: [{methods: [DELETE]}]
    when: [{claim: realm_access.roles, not_contains: admin}]
  - name: frontend
    action: allow
    from: [{principals: ["spiffe://cluster.local/ns/shop/sa/frontend", "cluster.local/ns/ops/*"]}]
    to: [{role: reader}]
  - name: users
    action: allow
    from: [{issuers: [https://id.example.com], not_request_principals: ["*/mallory"]}]
    to: [{methods: [GET, POST], paths: ["/api/cart/{**}"], ports: [8080, 443]}]
    when:
      - {claim: scope, contains: cart}
      - {header: x-env, any_of: [prod, staging]}
  - name: ns
    action: allow
    from: [{namespaces: ["team-*"], not_ip_blocks: [10.9.0.0/16]}]
    to: [{not_paths: ["/admin/{**}"], not_ports: [22], hosts: ["*.svc.cluster.local"]}]
  - name: authenticated-only
    action: allow
    from: [{authenticated: true}]
    to: [{paths: [/me, "/me/{*}"]}]
    when: [{header: x-tenant, present: true}, {claim: tenant, equals: acme}]
  - name: shadow-admin
    action: allow
    dry_run: true
    to: [{paths: ["/admin/{**}"]}]
  - name: watch
    action: audit
    to: [{paths: ["*"]}]
"""

RICH_POLICY_B = """
rules:
  - name: health
    action: allow
    to: [{methods: [GET], paths: [/healthz, /readyz]}]
  - name: grpc
    action: allow
    from: [{not_authenticated: true}]
    to: [{methods: [POST], paths: ["/pkg.Service/{*}"]}]
    when: [{header: content-type, prefix: application/grpc}, {claim: sub, not_equals: root}]
"""

_RICH = compile_yaml(RICH_POLICY_A, RICH_POLICY_B)

_WORDS = st.sampled_from(
    [
        "",
        "a",
        "api",
        "orders",
        "cart",
        "debug",
        "admin",
        "me",
        "x.bak",
        "tmpx",
        "{*}",
        "*",
        "%2F",
        "é",
        "\x00",
        "..",
        "pkg.Service",
        "healthz",
        "catalog",
    ]
)
_LIKELY_PATHS = [
    "/api/orders/7",
    "/api/orders",
    "/api/cart/x",
    "/api/catalog/a/b",
    "/me",
    "/me/x",
    "/healthz",
    "/pkg.Service/Do",
    "/admin/x",
    "/debug/x",
    "/x.bak",
    "/tmpfile",
]
_HOSTS = st.one_of(
    st.sampled_from(
        ["shop.example.com"] * 6
        + ["a.svc.cluster.local"] * 3
        + [
            "shop.example.com",
            "SHOP.example.com:8443",
            "a.svc.cluster.local",
            "svc.cluster.local",
            "shop.example.com.",
            "[::1]:80",
            "",
            ":",
            "x:y:z",
            "*.svc.cluster.local",
            "\x00",
        ]
    ),
    st.text(max_size=20),
)
_IPS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "192.0.2.7",
            "10.9.1.1",
            "::ffff:192.0.2.7",
            "2001:db8::1",
            "fe80::1%eth0",
            "not-an-ip",
            "",
            "300.1.1.1",
            "1.2.3.4:80",
        ]
    ),
    st.ip_addresses().map(str),
    st.text(max_size=10),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mostly(
    draw: st.DrawFn, plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]
) -> Any:
    """Plausible values 70% of the time, so allows happen too; hostile ones the rest."""
    return draw(plausible) if draw(st.integers(0, 9)) < 7 else draw(hostile)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    path = _mostly(
        draw,
        st.sampled_from(_LIKELY_PATHS),
        st.lists(_WORDS, max_size=5).map(lambda w: "/" + "/".join(w)),
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(["x-env", "x-tenant", "content-type", "authorization", "cookie", ""])
            | st.text(max_size=6),
            st.sampled_from(["prod", "staging", "application/grpc", "", "\x00"])
            | st.text(max_size=10),
            max_size=5,
        )
    )
    return Request(
        method=_mostly(
            draw,
            st.sampled_from(["GET", "POST"]),
            st.sampled_from(["DELETE", "HEAD", "get", "", "PATCH"]) | st.text(max_size=8),
        ),
        path=path if draw(st.integers(0, 4)) else draw(st.text(max_size=20)),
        host=_mostly(draw, st.sampled_from(["shop.example.com", "a.svc.cluster.local"]), _HOSTS),
        raw_path=path,
        query=draw(st.text(max_size=10)),
        headers=headers,
        source_ip=_mostly(draw, st.just("10.1.2.3"), _IPS),
        destination_port=draw(st.none() | st.sampled_from([8080, 443, 22, 0, -1, 65536, 2**70])),
    )


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    workload = None
    if draw(st.booleans()):
        principal = draw(
            st.sampled_from(
                [
                    "spiffe://cluster.local/ns/shop/sa/frontend",
                    "spiffe://cluster.local/ns/team-a/sa/x",
                    "spiffe://evil.local/ns/shop/sa/frontend",
                    "cluster.local/ns/ops/sa/y",
                    "",
                    "*",
                ]
            )
            | st.text(max_size=20)
        )
        workload = _mostly(
            draw,
            st.sampled_from(
                [
                    Workload(
                        "spiffe://cluster.local/ns/shop/sa/frontend",
                        "cluster.local",
                        "shop",
                        "frontend",
                    ),
                    Workload(
                        "spiffe://cluster.local/ns/team-a/sa/x", "cluster.local", "team-a", "x"
                    ),
                ]
            ),
            st.builds(
                Workload,
                st.just(principal),
                st.none() | st.sampled_from(["cluster.local", "evil.local", ""]),
                st.none() | st.sampled_from(["shop", "team-a", "ops", ""]),
                st.none() | st.text(max_size=5),
            ),
        )
    user = None
    if draw(st.booleans()):
        claims: dict[str, Any] = draw(
            st.dictionaries(
                st.sampled_from(["scope", "tenant", "sub", "realm_access", "scp", "roles"])
                | st.text(max_size=5),
                _JSON,
                max_size=6,
            )
        )
        if draw(st.booleans()):
            claims["realm_access"] = {
                "roles": draw(st.lists(st.sampled_from(["admin", "user"]), max_size=2))
                if draw(st.booleans())
                else draw(_JSON)
            }
        if draw(st.booleans()):
            claims["scope"] = draw(st.sampled_from(["cart", "cart orders", "", " cart "]) | _JSON)
        user = EndUser(
            draw(st.sampled_from(["https://id.example.com", "https://evil.example"])),
            draw(st.sampled_from(["alice", "mallory", "root", ""])),
            claims,
        )
    return Identity(workload=workload, user=user)


def _decide(request: Request, identity: Identity) -> Decision:
    return evaluate(_RICH.for_host(request.host), request, identity)


@HOSTILE
@given(requests(), identities())
def test_evaluate_never_raises_and_is_deterministic(request: Request, identity: Identity) -> None:
    first = _decide(request, identity)
    assert _decide(request, identity) == first
    assert isinstance(first, Decision)
    assert first.status in (200, 401, 403)
    assert first.allowed == (first.status == 200)
    if first.allowed:
        # An allow always names the enforced allow rule that decided it.
        assert first.reason == first.rule and first.rule in {
            "frontend",
            "users",
            "ns",
            "authenticated-only",
            "health",
            "grpc",
        }


@HOSTILE
@given(requests(), identities())
def test_deny_rules_win_over_any_identity(request: Request, identity: Identity) -> None:
    """No identity, however privileged its claims, gets past `no-debug`."""
    request = Request(
        method=request.method,
        path="/debug/x",
        host="shop.example.com",
        headers=request.headers,
        source_ip=request.source_ip,
    )
    decision = _decide(request, identity)
    assert not decision.allowed


# -- host spellings cannot skip a host's deny rules ----------------------------------------------

_HOST_SET = compile_yaml(
    "hosts: [shop.example.com]\nrules: [{name: no-admin, action: deny, to: [{paths: [/admin]}]}]\n",
    "rules: [{name: everything, action: allow}]\n",
)


@pytest.mark.parametrize(
    "host",
    [
        "shop.example.com",
        "SHOP.EXAMPLE.COM",
        "shop.example.com:443",
        "shop.example.com.",
        "shop.example.com.:443",
        "Shop.Example.Com.:8080",
        " shop.example.com",
        "shop.example.com\t",
        "shop.example.com..",
        "\u212a.shop.example.com",  # KELVIN SIGN
        "shop.example.com\u00a0",
        "shop.example.com:abc",
    ],
)
def test_a_host_spelling_cannot_skip_the_hosts_deny_rules(host: str) -> None:
    """A file without `hosts` allows everything; the shop file denies /admin. Every spelling
    Envoy could route to the shop must still get the shop file (case, port, trailing dot), and
    every other spelling is an invalid host (400) rather than a host-less request."""
    canonical = normalize_host(host)
    if canonical is None:
        return  # authz.wire.inbound refuses it: tests/unit/wire/test_inbound.py
    request = Request(method="GET", path="/admin", host=canonical)
    decision = evaluate(_HOST_SET.for_host(request.host), request, Identity())
    assert (decision.allowed, decision.reason) == (False, "no-admin")


@given(st.text(max_size=40))
def test_a_host_is_canonical_or_invalid(authority: str) -> None:
    """Whatever Envoy sends: invalid, or an ASCII lower-case host that normalizes to itself."""
    canonical = normalize_host(authority)
    if canonical is not None:
        assert canonical.isascii() and canonical == canonical.lower()
        assert normalize_host(canonical) == canonical
        assert canonical == "" or canonical.strip(" \t") == canonical
