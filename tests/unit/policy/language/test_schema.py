"""Validation: every kind of error names the file and the line of the offending node."""

from __future__ import annotations

import json

import pytest

from ..conftest import policy, problems

# (YAML, line, substring of the message)
ERRORS: list[tuple[str, int, str]] = [
    ("rules: [\n  {name: a\n", 3, "YAML"),
    ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
    ("rules:\n  - name: r\n    action: allow\n    action: deny\n", 4, "duplicate key 'action'"),
    ("---\nrules: []\n---\nrules: []\n", 3, "YAML"),
    ("", 1, "empty"),
    ("- a\n- b\n", 1, "must be a mapping"),
    ("hostz: [a]\n", 1, "did you mean 'hosts'"),
    ("rules:\n  - name: r\n    acton: allow\n", 3, "did you mean 'action'"),
    (
        "rules:\n  - name: r\n    action: allow\n    to: [{pathz: [/a]}]\n",
        4,
        "did you mean 'paths'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    from: [{principal: [a]}]\n",
        4,
        "did you mean 'principals'",
    ),
    ("rules:\n  - action: allow\n", 2, "needs a name"),
    ("rules:\n  - name: ''\n    action: allow\n", 2, "must not be empty"),
    ("rules:\n  - name: 'has space'\n    action: allow\n", 2, "use letters"),
    ("rules:\n  - name: no_matching_rule\n    action: allow\n", 2, "reserved"),
    ("rules:\n  - name: r\n", 2, "needs an action"),
    ("rules:\n  - name: r\n    action: permit\n", 3, "unknown action 'permit'"),
    ("rules:\n  - name: r\n    action: Allow\n", 3, "did you mean 'allow'"),
    ("rules:\n  - name: r\n    action: allow\n    dry_run: yes please\n", 4, "true or false"),
    ("rules:\n  - name: r\n    action: audit\n    dry_run: true\n", 4, "no meaning"),
    (
        "rules:\n  - {name: r, action: allow}\n  - {name: r, action: deny}\n",
        3,
        "duplicate rule name 'r'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a/{**}/b']\n",
        5,
        "last segment",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a{*}']\n",
        5,
        "whole segments",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - paths: [api/x]\n",
        5,
        "starts with '/'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a/*/b']\n",
        5,
        "lead or trail",
    ),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['*a*']\n", 5, "not both"),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a/../b']\n",
        5,
        "normal form",
    ),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a%2Fb']\n", 5, "encoded"),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - paths: ['/a?x=1']\n", 5, "query"),
    (
        "rules:\n  - name: r\n    action: allow\n    from:\n      - ip_blocks: [10.0.0.0/33]\n",
        5,
        "CIDR",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    from:\n      - ip_blocks: [10.0.0.1/8]\n",
        5,
        "CIDR",
    ),
    ("rules:\n  - name: r\n    action: allow\n    from:\n      - ip_blocks: [nope]\n", 5, "CIDR"),
    ("hosts: ['shop.*.com']\n", 1, "not a host name"),
    ("hosts: ['*']\n", 1, "omit `hosts`"),
    ("hosts: ['shop.example.com:443']\n", 1, "without the port"),
    ("hosts: []\n", 1, "empty list"),
    ("hosts: shop.example.com\n", 1, "must be a list"),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - methods: [get]\n",
        5,
        "did you mean 'GET'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - methods: ['GE T']\n",
        5,
        "not an HTTP method",
    ),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - ports: [0]\n", 5, "out of range"),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - ports: [65536]\n",
        5,
        "out of range",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to:\n      - ports: [http]\n",
        5,
        "a port is a number",
    ),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - {}\n", 5, "empty"),
    ("rules:\n  - name: r\n    action: allow\n    from:\n      - {}\n", 5, "empty"),
    ("rules:\n  - name: r\n    action: allow\n    from: []\n", 4, "empty list"),
    ("rules:\n  - name: r\n    action: allow\n    to:\n      - paths: []\n", 5, "empty list"),
    (
        "rules:\n  - name: r\n    action: allow\n    from:\n      - principals: ['a*b*c']\n",
        5,
        "lead or trail",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    from:\n      - authenticated: false\n",
        5,
        "not_authenticated",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {claim: scope}\n",
        5,
        "exactly one of",
    ),
    (
        (
            "rules:\n  - name: r\n    action: allow\n    when:\n"
            "      - {claim: scope, equals: a, contains: b}\n"
        ),
        5,
        "exactly one of",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {claim: scope, prefix: a}\n",
        5,
        "unknown field 'prefix'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {header: x, contains: a}\n",
        5,
        "unknown field 'contains'",
    ),
    (
        (
            "rules:\n  - name: r\n    action: allow\n    when:\n"
            "      - {header: x, claim: y, equals: a}\n"
        ),
        5,
        "exactly one `claim` or `header`",
    ),
    (
        (
            "rules:\n  - name: r\n    action: allow\n    when:\n"
            "      - {header: 'bad header', equals: a}\n"
        ),
        5,
        "not a header name",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {header: x, equals: 5}\n",
        5,
        "header value is a string",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {claim: x, any_of: []}\n",
        5,
        "empty list",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    when:\n      - {claim: x, present: maybe}\n",
        5,
        "true or false",
    ),
    ("roles:\n  reader:\n    - {role: other}\n", 3, "unknown field 'role'"),
    ("roles:\n  reader: []\n", 2, "empty list"),
    ("authentication:\n  mtls: {trust_domains: []}\n", 2, "empty list"),
    ("authentication:\n  mtls: {trust_domains: ['spiffe://x']}\n", 2, "not a trust domain"),
    ("authentication:\n  jwt:\n    - {jwks_uri: https://i/j}\n", 3, "needs an issuer"),
    ("authentication:\n  jwt:\n    - {issuer: https://i}\n", 3, "exactly one key source"),
    (
        "authentication:\n  jwt:\n    - {issuer: https://i, discovery: false}\n",
        3,
        "exactly one key source",
    ),
    (
        (
            "authentication:\n  jwt:\n"
            "    - {issuer: https://i, jwks_uri: https://i/j, discovery: true}\n"
        ),
        3,
        "exactly one key source",
    ),
    ("authentication:\n  jwt:\n    - {issuer: https://i, jwks_uri: ftp://i/j}\n", 3, "http(s) URL"),
    ("authentication:\n  jwt:\n    - issuer: https://i\n      jwks: {nokeys: 1}\n", 4, "JWKS"),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      algorithms: [none]\n"
        ),
        5,
        "never accepted",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      algorithms: [NONE]\n"
        ),
        5,
        "never accepted",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      algorithms: [RS257]\n"
        ),
        5,
        "unknown algorithm",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      from: [{header: a, query: b}]\n"
        ),
        5,
        "exactly one of header",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      from: [{query: a, prefix: b}]\n"
        ),
        5,
        "only for a header",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      claims_to_headers: {sub: 'x user'}\n"
        ),
        5,
        "not a header name",
    ),
    (
        (
            "authentication:\n  jwt:\n    - issuer: https://i\n      jwks_uri: https://i/j\n"
            "      audience: [a]\n"
        ),
        5,
        "did you mean 'audiences'",
    ),
    (
        "rules:\n  - name: r\n    action: allow\n    to: [{paths: [!!python/name:os.system /a]}]\n",
        4,
        "YAML",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_error_names_file_and_line(text: str, line: int, message: str) -> None:
    found = problems(text, names=["bad.yaml"])
    assert any(p.file == "bad.yaml" and p.line == line and message in p.message for p in found), (
        found
    )


def test_all_problems_are_collected() -> None:
    text = (
        "rules:\n  - {name: a, action: nope}\n"
        "  - {name: b, action: allow, to: [{methods: [get]}]}\n"
    )
    found = problems(text)
    assert [p.line for p in found] == [2, 3]


def test_problems_from_several_files() -> None:
    found = problems("hostz: []\n", "rules: [{action: allow}]\n", names=["a.yaml", "b.yaml"])
    assert {p.file for p in found} == {"a.yaml", "b.yaml"}


def test_duplicate_rule_names_across_files_name_both_places() -> None:
    found = problems(
        "rules:\n  - {name: r, action: allow}\n",
        "rules:\n  - {name: x, action: allow}\n  - {name: r, action: deny}\n",
        names=["a.yaml", "b.yaml"],
    )
    assert {(p.file, p.line) for p in found} == {("a.yaml", 2), ("b.yaml", 3)}
    assert all("also used at" in p.message for p in found)
    assert any("b.yaml:3" in p.message for p in found) and any(
        "a.yaml:2" in p.message for p in found
    )


def test_duplicate_roles_across_files() -> None:
    found = problems(
        "roles: {r: [{paths: [/a]}]}\n",
        "roles:\n  r: [{paths: [/b]}]\n",
        names=["a.yaml", "b.yaml"],
    )
    assert {(p.file, p.line) for p in found} == {("a.yaml", 1), ("b.yaml", 2)}


def test_undefined_role() -> None:
    found = problems(
        "rules:\n  - name: r\n    action: allow\n    to:\n      - role: nope\n", names=["a.yaml"]
    )
    assert [(p.file, p.line) for p in found] == [("a.yaml", 5)]
    assert "undefined role 'nope'" in found[0].message


def test_authentication_parses_into_model() -> None:
    p = policy(
        """
        authentication:
          jwt:
            - issuer: https://id.example.com
              audiences: [shop-api]
              jwks_file: keys/jwks.json
              from:
                - {header: Authorization, prefix: "Bearer "}
                - {query: access_token}
                - {cookie: session}
              forward: false
              claims_to_headers: {sub: X-User-Id}
              algorithms: [RS256, ES256]
            - issuer: https://inline
              jwks: {keys: [{kty: oct, k: abc}]}
            - issuer: https://disc
              discovery: true
        """
    )
    a, b, c = p.jwt_providers
    assert a.jwks_file == "/policies/keys/jwks.json"
    assert a.audiences == ("shop-api",)
    assert a.locations[0].header == "authorization" and a.locations[0].prefix == "Bearer "
    assert a.locations[1].query == "access_token" and a.locations[2].cookie == "session"
    assert a.forward is False and a.claims_to_headers == (("sub", "x-user-id"),)
    assert a.algorithms == ("RS256", "ES256")
    assert b.jwks_json is not None and json.loads(b.jwks_json) == {
        "keys": [{"kty": "oct", "k": "abc"}]
    }
    assert b.locations[0].header == "authorization"  # the default location
    assert c.discovery and c.jwks_uri is None and c.algorithms == ()


def test_forward_defaults_to_false_and_true_keeps_the_token() -> None:
    p = policy(
        """
        authentication:
          jwt:
            - {issuer: https://a, jwks_uri: https://a/jwks}
            - {issuer: https://b, jwks_uri: https://b/jwks, forward: true}
        """
    )
    a, b = p.jwt_providers
    assert a.forward is False  # as Envoy's jwt_authn and Istio's forwardOriginalToken
    assert b.forward is True


def test_rules_are_introspectable() -> None:
    p = policy(
        "rules:\n  - name: r\n    action: deny\n    dry_run: true\n    to: [{paths: [/a]}]\n",
        names=["f.yaml"],
    )
    (rule,) = p.rules
    assert (rule.name, rule.file, rule.line, rule.action, rule.dry_run) == (
        "r",
        "f.yaml",
        2,
        "deny",
        True,
    )
    assert p.rule_count == 1 and p.revision


def test_explain_says_which_field_failed() -> None:
    from authz.model import Identity

    from ..conftest import FRONTEND, ident, req

    p = policy(
        """
        rules:
          - name: r
            action: allow
            from: [{namespaces: [shop], principals: ['*/sa/frontend']}]
            to: [{methods: [GET], paths: [/a]}, {methods: [POST]}]
            when: [{header: x-env, equals: prod}]
        """
    )
    (rule,) = p.rules
    assert (
        rule.explain(req("/b", "PUT"), Identity())
        == "to: no entry matches (entry 1: methods; entry 2: methods)"
    )
    assert (
        rule.explain(req("/b"), Identity())
        == "to: no entry matches (entry 1: paths; entry 2: methods)"
    )
    assert (
        rule.explain(req("/a"), ident("spiffe://cluster.local/ns/ops/sa/frontend"))
        == "from: namespaces"
    )
    assert (
        rule.explain(req("/a"), ident("spiffe://cluster.local/ns/shop/sa/x")) == "from: principals"
    )
    assert rule.explain(req("/a"), ident(FRONTEND)) == "when: header x-env equals 'prod'"
    assert rule.explain(req("/a", headers={"x-env": "prod"}), ident(FRONTEND)) is None


def test_undefined_role_suggests_a_close_name() -> None:
    found = problems(
        "roles: {orders-reader: [{paths: [/a]}]}\n"
        "rules: [{name: r, action: allow, to: [{role: order-reader}]}]\n"
    )
    assert "did you mean 'orders-reader'" in found[0].message
