"""The field declarations drive the spec, the validator, the compiler, the JSON Schema and
explain: these tests pin that each part reads them, so a new field is one entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema
import pytest
import yaml

from authz.authoring.json_schema import policy_schema
from authz.commands.explain import _meaning
from authz.policy.conditions import CONDITION_KINDS
from authz.policy.fields import FROM_FIELDS, ROLE_FIELDS, TO_FIELDS, EntryField, describe
from authz.policy.schema import parse_file
from authz.policy.spec import FromSpec, ToSpec

SCHEMA = policy_schema()


def _spec_keys(fields: tuple[EntryField, ...]) -> set[str]:
    return {k for f in fields for k in (f.keys if not f.kind.flag else (f.name,))}


@pytest.mark.parametrize(
    ("spec", "fields"), [(FromSpec, FROM_FIELDS), (ToSpec, TO_FIELDS)], ids=["from", "to"]
)
def test_the_spec_has_one_attribute_per_declared_key(
    spec: type, fields: tuple[EntryField, ...]
) -> None:
    attributes = {f.name for f in dataclasses.fields(spec)} - {"line"}
    assert attributes == _spec_keys(fields)


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


_SAMPLE = {"scalar": "x", "list": ["x", "y"], "flag": True}


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
    doc = {"rules": [{"name": "r", "action": "allow", "when": [cond]}]}
    text = yaml.safe_dump(doc)
    spec = parse_file("p.yaml", text, str(tmp_path))
    assert not isinstance(spec, list), spec
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(doc)


def test_explain_says_what_the_failed_field_matches() -> None:
    paths = next(f for f in TO_FIELDS if f.name == "paths")
    assert _meaning("to: paths") == f"paths: {paths.description}"
    assert _meaning("from: not_principals") is not None
    assert _meaning("when: claim scope contains 'cart'") is None
    assert _meaning("to: no entry matches (entry 1: paths; entry 2: methods)") is None
    assert _meaning(None) is None
