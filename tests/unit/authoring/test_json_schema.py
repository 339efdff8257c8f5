"""The JSON Schema for editors and the real validator must agree on what a policy file is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from authz.authoring import json_schema
from authz.errors import PolicyError
from authz.policy import load_policy_set
from authz.policy.language import schema as policy_schema
from authz.policy.language.spec import JwtProvider

from .conftest import EXAMPLE_POLICIES, REPO, write

SCHEMA = json_schema.policy_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

RULE = "rules: [{name: r, action: allow, to: [{paths: [/x]}]}]\n"

# Documents the validator must reject and the schema must reject too: every one is a mistake a
# policy author can make and an editor can catch while typing.
INVALID = {
    "unknown top-level field": "rule: []\n",
    "not a mapping": "- a\n- b\n",
    "empty hosts": "hosts: []\n" + RULE,
    "host with port": "hosts: [a.example:80]\n" + RULE,
    "host star": "hosts: ['*']\n" + RULE,
    "rules not a list": "rules: {name: r}\n",
    "empty rules": "rules: []\n",
    "rule without name": "rules: [{action: allow}]\n",
    "rule without action": "rules: [{name: r}]\n",
    "unknown action": "rules: [{name: r, action: alow}]\n",
    "bad rule name": "rules: [{name: 'has space', action: allow}]\n",
    "reserved rule name": "rules: [{name: no_matching_rule, action: deny}]\n",
    "unknown rule field": "rules: [{name: r, action: allow, form: [{principals: [a]}]}]\n",
    "dry_run not boolean": "rules: [{name: r, action: allow, dry_run: 'yes please'}]\n",
    "dry_run on audit": "rules: [{name: r, action: audit, dry_run: true}]\n",
    "empty from entry": "rules: [{name: r, action: allow, from: [{}]}]\n",
    "empty to entry": "rules: [{name: r, action: allow, to: [{}]}]\n",
    "empty from list": "rules: [{name: r, action: allow, from: []}]\n",
    "unknown from field": "rules: [{name: r, action: allow, from: [{principal: [a]}]}]\n",
    "principals not a list": "rules: [{name: r, action: allow, from: [{principals: a}]}]\n",
    "star in the middle": "rules: [{name: r, action: allow, from: [{namespaces: ['a*b']}]}]\n",
    "star both ends": "rules: [{name: r, action: allow, from: [{principals: ['*a*']}]}]\n",
    "authenticated false": "rules: [{name: r, action: allow, from: [{authenticated: false}]}]\n",
    "both authenticated forms": (
        "rules: [{name: r, action: allow, "
        "from: [{authenticated: true, not_authenticated: true}]}]\n"
    ),
    "lower-case method": "rules: [{name: r, action: allow, to: [{methods: [get]}]}]\n",
    "relative path": "rules: [{name: r, action: allow, to: [{paths: [api/x]}]}]\n",
    "port out of range": "rules: [{name: r, action: allow, to: [{ports: [70000]}]}]\n",
    "port not a number": "rules: [{name: r, action: allow, to: [{ports: [http]}]}]\n",
    "role inside a role": "roles: {a: [{role: b}]}\n" + RULE,
    "empty role": "roles: {a: []}\n" + RULE,
    "bad role name": "roles: {'a b': [{paths: [/x]}]}\n" + RULE,
    "condition with both kinds": (
        "rules: [{name: r, action: allow, when: [{claim: a, header: b, present: true}]}]\n"
    ),
    "condition without operator": "rules: [{name: r, action: allow, when: [{claim: scope}]}]\n",
    "condition with two operators": (
        "rules: [{name: r, action: allow, when: [{claim: scope, equals: a, contains: a}]}]\n"
    ),
    "prefix on a claim": "rules: [{name: r, action: allow, when: [{claim: scope, prefix: a}]}]\n",
    "contains on a header": (
        "rules: [{name: r, action: allow, when: [{header: x-a, contains: a}]}]\n"
    ),
    "empty header prefix": "rules: [{name: r, action: allow, when: [{header: x-a, prefix: ''}]}]\n",
    "header value not a string": (
        "rules: [{name: r, action: allow, when: [{header: x-a, equals: 3}]}]\n"
    ),
    "bad header name": (
        "rules: [{name: r, action: allow, when: [{header: 'x a', present: true}]}]\n"
    ),
    "present not boolean": (
        "rules: [{name: r, action: allow, when: [{claim: a, present: maybe}]}]\n"
    ),
    "unknown authentication field": "authentication: {oauth: {}}\n" + RULE,
    "trust domain with slash": "authentication: {mtls: {trust_domains: [a/b]}}\n" + RULE,
    "provider without issuer": "authentication: {jwt: [{jwks_uri: 'https://a/j'}]}\n" + RULE,
    "provider without key source": "authentication: {jwt: [{issuer: i}]}\n" + RULE,
    "provider with two key sources": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', jwks_file: k.json}]}\n"
    )
    + RULE,
    "jwks_uri not http": "authentication: {jwt: [{issuer: i, jwks_uri: 'file:///etc/k'}]}\n" + RULE,
    "jwks without keys": "authentication: {jwt: [{issuer: i, jwks: {}}]}\n" + RULE,
    "alg none": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', algorithms: [none]}]}\n"
    )
    + RULE,
    "unknown alg": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', algorithms: [RS257]}]}\n"
    )
    + RULE,
    "empty audiences": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', audiences: []}]}\n"
    )
    + RULE,
    "token location with two kinds": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', "
        "from: [{header: a, query: b}]}]}\n"
    )
    + RULE,
    "prefix on a query location": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', "
        "from: [{query: b, prefix: 'x '}]}]}\n"
    )
    + RULE,
    "forward not boolean": (
        "authentication: {jwt: [{issuer: i, jwks_uri: 'https://a/j', forward: nope}]}\n"
    )
    + RULE,
}

VALID = {
    "rules only": RULE,
    "every from field": """
        rules:
          - name: r
            action: allow
            from:
              - principals: ["spiffe://cluster.local/ns/a/sa/b", "cluster.local/ns/a/*"]
                not_namespaces: ["*-test"]
                request_principals: ["https://id/*"]
                issuers: [https://id]
                ip_blocks: [10.0.0.0/8, "::1"]
                authenticated: true
            to:
              - {methods: [GET, POST], not_paths: ["/a/{*}/b", "/c/{**}", "*.png"], hosts: ["*.example.com"], ports: [8080, "9090"]}
              - {role: [reader], not_methods: [DELETE]}
            when:
              - {claim: realm_access.roles, contains: admin}
              - {claim: age, not_equals: 3}
              - {claim: scope, any_of: [a, b]}
              - {header: x-env, prefix: prod}
              - {header: x-debug, present: false}
        roles:
          reader: [{methods: [GET], paths: [/r]}]
    """,  # noqa: E501 - a policy test vector, kept as written
    "full authentication": """
        hosts: [a.example.com, "*.svc.cluster.local"]
        authentication:
          mtls: {trust_domains: [cluster.local]}
          jwt:
            - issuer: https://id.example
              audiences: [api]
              jwks_uri: https://id.example/jwks
              from: [{header: authorization, prefix: "Bearer "}, {query: token}, {cookie: s}]
              forward: false
              claims_to_headers: {sub: x-user-id}
              algorithms: [RS256, ES256]
            - issuer: https://other
              discovery: true
            - issuer: https://inline
              jwks: {keys: [{kty: oct, k: AAAA}]}
        rules:
          - {name: a.b-c_d, action: audit, to: [{paths: ["*"]}]}
          - {name: dry, action: allow, dry_run: true}
    """,
}


def _schema_ok(text: str) -> bool:
    return VALIDATOR.is_valid(yaml.safe_load(text))


def _validator_ok(tmp_path: Path, text: str) -> bool:
    write(tmp_path, "policy.yaml", text)
    try:
        load_policy_set(str(tmp_path))
    except PolicyError:
        return False
    return True


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", sorted(EXAMPLE_POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_policies_are_valid_for_the_schema(path: Path) -> None:
    if path.name.endswith("_test.yaml"):
        pytest.skip("a policy test, not a policy")
    errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("text", list(VALID.values()), ids=list(VALID))
def test_valid_documents_pass_both(tmp_path: Path, text: str) -> None:
    import textwrap

    text = textwrap.dedent(text)
    assert _validator_ok(tmp_path, text), "the validator rejects it"
    assert _schema_ok(text), [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]


@pytest.mark.parametrize("text", list(INVALID.values()), ids=list(INVALID))
def test_invalid_documents_fail_both(tmp_path: Path, text: str) -> None:
    assert not _validator_ok(tmp_path, text), "the validator accepts it"
    assert not _schema_ok(text), "the schema accepts it"


def test_the_schema_lists_are_the_validator_lists() -> None:
    name = SCHEMA["$defs"]["rule"]["properties"]["name"]
    algorithms = SCHEMA["$defs"]["provider"]["properties"]["algorithms"]["items"]["enum"]
    assert set(name["not"]["enum"]) == set(policy_schema.RESERVED_NAMES)
    assert set(algorithms) == set(policy_schema.KNOWN_ALGORITHMS)
    assert name["pattern"] == f"^{policy_schema._NAME.pattern}$"


def _fields(schema: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            out.append((name, sub))
        for key, value in schema.items():
            if key not in ("if", "then", "not"):  # conditions restate fields, they add none
                out.extend(_fields(value))
    elif isinstance(schema, list):
        for value in schema:
            out.extend(_fields(value))
    return out


def test_every_field_has_a_description() -> None:
    missing = sorted(
        {name for name, sub in _fields(SCHEMA) if "description" not in sub and "$ref" not in sub}
    )
    # `keys` is inside an inline JWKS: a foreign format, described by its parent.
    assert missing in ([], ["keys"])


def test_defaults_are_declared_and_agree_with_the_model() -> None:
    provider = SCHEMA["$defs"]["provider"]["properties"]
    model = JwtProvider(issuer="i")
    assert provider["forward"]["default"] is model.forward is False
    assert provider["from"]["default"] == [{"header": "authorization", "prefix": "Bearer "}]
    assert [(loc.header, loc.prefix) for loc in model.locations] == [("authorization", "Bearer ")]
    assert provider["discovery"]["default"] is False
    rule = SCHEMA["$defs"]["rule"]["properties"]
    assert rule["dry_run"]["default"] is False
    # A default is a valid value of its own field.
    for name, sub in _fields(SCHEMA):
        if "default" in sub:
            field = {**sub, "$defs": SCHEMA["$defs"]}
            assert jsonschema.Draft202012Validator(field).is_valid(sub["default"]), name


def test_the_committed_copy_equals_authz_schema_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "authz", "schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    committed = (REPO / "docs" / "policy.schema.json").read_text(encoding="utf-8")
    assert out == committed, (
        "docs/policy.schema.json is stale: run `authz schema -o docs/policy.schema.json`"
    )
    assert json.loads(out) == SCHEMA
