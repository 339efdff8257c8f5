"""Every field of docs/policy.md's rule table, with its `not_` form, positive and negative.

Each case is one allow rule with one field; the `not_` form of the same field and values must
give the opposite answer (it matches when none of the values match).
"""

from __future__ import annotations

from typing import Any

import pytest

from authz.model import Identity, Request

from ..conftest import ANON, FRONTEND, ISSUER, ident, policy, req, user

ALICE = user("alice")
SHOP = ident(FRONTEND)
BARE = ident("cluster.local/ns/shop/sa/frontend")  # not a SPIFFE ID: no scheme

# (part, field, YAML values, request, identity, expected match)
CASES: list[tuple[str, str, str, Request, Identity, bool]] = [
    # principals: full SPIFFE form, Istio short form, `*`, prefix and suffix
    ("from", "principals", f"[{FRONTEND}]", req(), SHOP, True),
    ("from", "principals", "[cluster.local/ns/shop/sa/frontend]", req(), SHOP, True),
    ("from", "principals", "[spiffe://cluster.local/ns/shop/sa/backend]", req(), SHOP, False),
    ("from", "principals", "[cluster.local/ns/shop/sa/backend]", req(), SHOP, False),
    ("from", "principals", "['*']", req(), SHOP, True),
    ("from", "principals", "['*']", req(), ANON, False),
    ("from", "principals", "['*']", req(), ident(jwt=ALICE), False),
    ("from", "principals", "['cluster.local/ns/shop/*']", req(), SHOP, True),
    ("from", "principals", "['spiffe://cluster.local/ns/shop/*']", req(), SHOP, True),
    ("from", "principals", "['cluster.local/ns/ops/*']", req(), SHOP, False),
    ("from", "principals", "['*/sa/frontend']", req(), SHOP, True),
    ("from", "principals", "['*/sa/admin']", req(), SHOP, False),
    ("from", "principals", f"[{FRONTEND}]", req(), ANON, False),
    ("from", "principals", "[spiffe://other.td/ns/shop/sa/frontend]", req(), SHOP, False),
    # The short form stands for `spiffe://...` (issue 10.3): a peer whose principal is the bare
    # text `cluster.local/ns/...` (a URI SAN without scheme) is no SPIFFE ID and never matches
    # it, exactly or by prefix; a `*suffix` pattern is a plain suffix, as in Istio.
    ("from", "principals", "[cluster.local/ns/shop/sa/frontend]", req(), BARE, False),
    ("from", "principals", "['cluster.local/ns/shop/*']", req(), BARE, False),
    ("from", "principals", f"[{FRONTEND}]", req(), BARE, False),
    ("from", "principals", "['*/sa/frontend']", req(), BARE, True),
    ("from", "principals", "['*']", req(), BARE, True),
    # namespaces
    ("from", "namespaces", "[shop]", req(), SHOP, True),
    ("from", "namespaces", "[ops]", req(), SHOP, False),
    ("from", "namespaces", "['sh*']", req(), SHOP, True),
    ("from", "namespaces", "['*op']", req(), SHOP, True),
    ("from", "namespaces", "['*']", req(), ident("CN=legacy"), False),  # no SPIFFE namespace
    ("from", "namespaces", "[shop]", req(), ANON, False),
    # request_principals
    ("from", "request_principals", f"['{ISSUER}/alice']", req(), ident(jwt=ALICE), True),
    ("from", "request_principals", f"['{ISSUER}/bob']", req(), ident(jwt=ALICE), False),
    ("from", "request_principals", f"['{ISSUER}/*']", req(), ident(jwt=ALICE), True),
    ("from", "request_principals", "['*/alice']", req(), ident(jwt=ALICE), True),
    ("from", "request_principals", "['*']", req(), ident(jwt=ALICE), True),
    ("from", "request_principals", "['*']", req(), SHOP, False),
    # issuers
    ("from", "issuers", f"['{ISSUER}']", req(), ident(jwt=ALICE), True),
    ("from", "issuers", "['https://other.example.com']", req(), ident(jwt=ALICE), False),
    ("from", "issuers", f"['{ISSUER}']", req(), ANON, False),
    # ip_blocks: single IPs and CIDRs, v4 and v6, v4-mapped v6
    ("from", "ip_blocks", "[10.0.0.0/8]", req(ip="10.1.2.3"), ANON, True),
    ("from", "ip_blocks", "[10.1.2.3]", req(ip="10.1.2.3"), ANON, True),
    ("from", "ip_blocks", "[192.168.0.0/16]", req(ip="10.1.2.3"), ANON, False),
    ("from", "ip_blocks", "['2001:db8::/32']", req(ip="2001:db8::1"), ANON, True),
    ("from", "ip_blocks", "['2001:db8::/32']", req(ip="2001:db9::1"), ANON, False),
    ("from", "ip_blocks", "['::1']", req(ip="::1"), ANON, True),
    ("from", "ip_blocks", "[10.0.0.0/8]", req(ip="::ffff:10.9.9.9"), ANON, True),
    ("from", "ip_blocks", "[10.0.0.0/8]", req(ip="2001:db8::1"), ANON, False),
    ("from", "ip_blocks", "[10.0.0.0/8]", req(ip=None), ANON, False),
    ("from", "ip_blocks", "[10.0.0.0/8]", req(ip="not-an-ip"), ANON, False),
    # methods
    ("to", "methods", "[GET, HEAD]", req(method="GET"), ANON, True),
    ("to", "methods", "[GET, HEAD]", req(method="POST"), ANON, False),
    ("to", "methods", "[GET]", req(method="get"), ANON, False),  # methods are case-sensitive
    ("to", "methods", "[POST]", req("/pkg.Svc/Call", method="POST"), ANON, True),
    # paths: exact, {*}, {**}, Istio prefix*, *suffix, *
    ("to", "paths", "[/api/orders]", req("/api/orders"), ANON, True),
    ("to", "paths", "[/api/orders]", req("/api/orders/"), ANON, False),
    ("to", "paths", "[/api/orders]", req("/api/orders/1"), ANON, False),
    ("to", "paths", "['/api/orders/{*}']", req("/api/orders/1"), ANON, True),
    ("to", "paths", "['/api/orders/{*}']", req("/api/orders/"), ANON, False),
    ("to", "paths", "['/api/orders/{*}']", req("/api/orders/1/items"), ANON, False),
    ("to", "paths", "['/api/{*}/items']", req("/api/7/items"), ANON, True),
    ("to", "paths", "['/api/{*}/items']", req("/api/7/8/items"), ANON, False),
    ("to", "paths", "['/api/{**}']", req("/api/"), ANON, True),
    ("to", "paths", "['/api/{**}']", req("/api/a"), ANON, True),
    ("to", "paths", "['/api/{**}']", req("/api/a/b"), ANON, True),
    ("to", "paths", "['/api/{**}']", req("/api"), ANON, False),
    ("to", "paths", "['/api/{**}']", req("/apix/a"), ANON, False),
    ("to", "paths", "['/{**}']", req("/anything/at/all"), ANON, True),
    ("to", "paths", "['/api*']", req("/apix"), ANON, True),
    ("to", "paths", "['/api/*']", req("/api/a/b"), ANON, True),
    ("to", "paths", "['/api/*']", req("/api"), ANON, False),
    ("to", "paths", "['*.js']", req("/static/app.js"), ANON, True),
    ("to", "paths", "['*.js']", req("/static/app.css"), ANON, False),
    ("to", "paths", "['*']", req("/x"), ANON, True),
    ("to", "paths", "['/pkg.Service/Method']", req("/pkg.Service/Method", "POST"), ANON, True),
    ("to", "paths", "['/a.b/{*}']", req("/aXb/c"), ANON, False),  # '.' is literal
    # hosts
    ("to", "hosts", "[shop.example.com]", req(host="shop.example.com"), ANON, True),
    ("to", "hosts", "[Shop.Example.COM]", req(host="shop.example.com"), ANON, True),
    ("to", "hosts", "['*.example.com']", req(host="shop.example.com"), ANON, True),
    ("to", "hosts", "['*.example.com']", req(host="a.b.example.com"), ANON, True),
    ("to", "hosts", "['*.example.com']", req(host="example.com"), ANON, False),
    ("to", "hosts", "[other.example.com]", req(host="shop.example.com"), ANON, False),
    # ports
    ("to", "ports", "[8080, 8443]", req(port=8080), ANON, True),
    ("to", "ports", "['8080']", req(port=8080), ANON, True),
    ("to", "ports", "[9090]", req(port=8080), ANON, False),
    ("to", "ports", "[8080]", req(port=None), ANON, False),
]


def _decide(part: str, field: str, values: str, request: Request, identity: Identity) -> bool:
    p = policy(
        f"""
        rules:
          - name: r
            action: allow
            {part}: [{{{field}: {values}}}]
        """
    )
    host_policy = p.for_host(request.host)
    assert host_policy is not None
    from authz.policy import evaluate

    return evaluate(host_policy, request, identity).allowed


@pytest.mark.parametrize(("part", "field", "values", "request_", "identity", "expected"), CASES)
def test_field(
    part: str, field: str, values: str, request_: Request, identity: Identity, expected: bool
) -> None:
    assert _decide(part, field, values, request_, identity) is expected


@pytest.mark.parametrize(("part", "field", "values", "request_", "identity", "expected"), CASES)
def test_not_field(
    part: str, field: str, values: str, request_: Request, identity: Identity, expected: bool
) -> None:
    assert _decide(part, f"not_{field}", values, request_, identity) is (not expected)


AUTH_CASES: list[tuple[Identity, bool]] = [
    (ANON, False),
    (SHOP, True),
    (ident(jwt=ALICE), True),
    (ident(FRONTEND, jwt=ALICE), True),
]


@pytest.mark.parametrize(("identity", "expected"), AUTH_CASES)
def test_authenticated(identity: Identity, expected: bool) -> None:
    assert _decide("from", "authenticated", "true", req(), identity) is expected
    assert _decide("from", "not_authenticated", "true", req(), identity) is (not expected)


def test_fields_in_one_entry_are_anded_and_entries_ored() -> None:
    p = policy(
        """
        rules:
          - name: r
            action: allow
            from: [{namespaces: [shop], principals: ['*/sa/frontend']}, {namespaces: [ops]}]
            to: [{methods: [GET], paths: [/a]}, {methods: [POST], paths: [/b]}]
        """
    )
    hp = p.for_host("x")
    from authz.policy import evaluate

    def ok(r: Request, i: Identity) -> bool:
        return evaluate(hp, r, i).allowed

    assert ok(req("/a"), SHOP)
    assert ok(req("/b", "POST"), SHOP)
    assert not ok(req("/a", "POST"), SHOP)  # methods of one entry, paths of the other
    assert not ok(req("/a"), ident("spiffe://cluster.local/ns/shop/sa/backend"))
    assert ok(req("/a"), ident("spiffe://cluster.local/ns/ops/sa/anyone"))


def _unused(_: Any) -> None:  # keep imports honest for linters
    return None
