"""The field declarations drive the spec, the validator, the compiler, the JSON Schema and
explain: these tests pin that each part reads them, so a new field is one entry."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from authz.authoring.json_schema import policy_schema
from authz.commands.explain import _meaning
from authz.policy.decide.rules import compile_rule
from authz.policy.language.conditions import CONDITION_KINDS
from authz.policy.language.fields import FROM_FIELDS, ROLE_FIELDS, TO_FIELDS, EntryField, describe
from authz.policy.language.schema import parse_file

SCHEMA = policy_schema()


# One valid value per value kind, to build a document that uses a single field.
_VALID = {
    "principals": ["spiffe://cluster.local/ns/a/sa/b"],
    "namespaces": ["shop"],
    "request_principals": ["https://id.example/*"],
    "issuers": ["https://id.example"],
    "ip_blocks": ["10.0.0.0/8"],
    "api_keys": ["partners/*"],
    "authenticated": True,
    "methods": ["GET"],
    "paths": ["/api/{**}"],
    "hosts": ["shop.example.com"],
    "ports": [8080],
    "role": "reader",
}
_ROLE = {"roles": {"reader": [{"methods": ["GET"]}]}}


@pytest.mark.parametrize(
    ("section", "key"),
    [("from", k) for f in FROM_FIELDS for k in f.keys]
    + [("to", k) for f in TO_FIELDS for k in f.keys],
)
def test_every_declared_key_validates_compiles_and_is_in_the_schema(
    tmp_path: Path, section: str, key: str
) -> None:
    """Walking the declarations is all the validator, spec and compiler need for a field."""
    name = key.removeprefix("not_")
    doc = {**_ROLE, "rules": [{"name": "r", "action": "allow", section: [{key: _VALID[name]}]}]}
    spec = parse_file("p.yaml", yaml.safe_dump(doc), str(tmp_path))
    assert not isinstance(spec, list), spec
    entry = (spec.rules[0].from_ or spec.rules[0].to or ())[0]
    assert entry.get(name) is not None or entry.get(key) is not None
    roles = {"reader": spec.roles[0].entries}
    compiled = compile_rule(0, spec.rules[0], roles)
    checks = (compiled.from_ or compiled.to or ())[0].checks
    assert [check[0] for check in checks] == [key]
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(doc)


@pytest.mark.parametrize(
    ("section", "fields"),
    [("from", FROM_FIELDS), ("to", TO_FIELDS), ("role_entry", ROLE_FIELDS)],
)
def test_the_json_schema_lists_every_declared_key_with_its_description(
    section: str, fields: tuple[EntryField, ...]
) -> None:
    props = SCHEMA["$defs"][section]["properties"]
    assert set(props) == {k for f in fields for k in f.keys}
    for f in fields:
        assert props[f.name]["description"] == f.description
        assert describe("to" if section != "from" else "from", f.name) == f.description


_SAMPLE = {"scalar": "x", "list": ["x", "y"], "flag": True, "capture": "t"}


@pytest.mark.parametrize(
    "kind_key",
    [(k.name, key) for k in CONDITION_KINDS for key in k.operator_keys],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def test_every_declared_operator_validates_compiles_and_is_in_the_schema(
    tmp_path: Path, kind_key: tuple[str, str]
) -> None:
    kind_name, key = kind_key
    kind = next(k for k in CONDITION_KINDS if k.name == kind_name)
    op, _ = kind.operator(key)
    cond = {kind_name: "x-subject", key: _SAMPLE[op.shape]}
    rule = {"name": "r", "action": "allow", "when": [cond]}
    if op.shape == "capture":  # a capture compared with must be bound by the rule's paths
        rule["to"] = [{"paths": ["/x/{t}"]}]
    doc = {"rules": [rule]}
    text = yaml.safe_dump(doc)
    spec = parse_file("p.yaml", text, str(tmp_path))
    assert not isinstance(spec, list), spec
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(doc)


def test_explain_says_what_the_failed_field_matches() -> None:
    assert _meaning("to: paths") == "paths: The normalized path."
    assert _meaning("to: methods") == "methods: The HTTP method, upper case; gRPC calls are `POST`."
    assert _meaning("from: not_principals") is not None
    assert _meaning("when: claim scope contains 'cart'") is None
    assert _meaning("to: no entry matches (entry 1: paths; entry 2: methods)") is None
    assert _meaning(None) is None
