"""The JSON Schema (draft 2020-12) of one policy file, for editors: generated, not written.

The YAML language server reads it from a modeline (`# yaml-language-server: $schema=...`) and
then completes field names, shows the descriptions on hover and flags mistakes as the author
types. Every part comes from the declarations the validator walks (`authz.policy.language.fields`,
`conditions`, `sections`), so the two cannot drift. What JSON Schema cannot say (paths in
normal form, roles that exist, names unique across the set, CIDR host bits) only
`authz validate` checks. A test feeds both the same documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from authz.policy.language import sections as sec
from authz.policy.language import sections_introspection as introspection_sections
from authz.policy.language.conditions import CONDITION_KINDS, ConditionKind, Operator
from authz.policy.language.fields import (
    FROM_FIELDS,
    ROLE_FIELDS,
    TO_FIELDS,
    EntryField,
    not_description,
)
from authz.policy.language.kinds import CAPTURE_NAME, Schema, listed, text

SCHEMA_ID = "https://authz.example.dev/schemas/policy.schema.json"


def _entry(description: str, fields: Iterable[EntryField]) -> Schema:
    props: Schema = {}
    out: Schema = {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "minProperties": 1,
        "properties": props,
    }
    for f in fields:
        props[f.name] = f.kind.schema(f.description)
        if f.negatable:
            props[f"not_{f.name}"] = f.kind.schema(not_description(f))
        if f.kind.flag:  # `authenticated` and `not_authenticated` contradict each other
            out["not"] = {"required": list(f.keys)}
    return out


def _operand(kind: ConditionKind, op: Operator) -> Schema:
    if op.shape == "flag":
        return {"type": "boolean", "description": op.description}
    if op.shape == "capture":
        return text(op.description, f"^{CAPTURE_NAME.pattern}$")
    value = {"type": kind.value_json_types, "description": f"A {kind.name} value."}
    if op.shape == "list":
        return listed(op.description, value)
    return {"type": kind.value_json_types, **(op.schema or {}), "description": op.description}


def _condition(kind: ConditionKind) -> Schema:
    props: Schema = {kind.name: text(kind.subject, kind.subject_pattern)}
    for op in kind.operators:
        props[op.name] = _operand(kind, op)
        if op.negatable:
            props[f"not_{op.name}"] = dict(
                props[op.name], description=f"Holds when `{op.name}` does not."
            )
    return {
        "type": "object",
        "description": kind.description,
        "additionalProperties": False,
        "required": [kind.name],
        "properties": props,
        "oneOf": [{"required": [k]} for k in kind.operator_keys],
    }


def _when() -> Schema:
    names = " or ".join(f"`{k.name}`" for k in CONDITION_KINDS)
    return {
        "description": f"A condition that must hold: names one {names} and one operator.",
        "oneOf": [_condition(k) for k in CONDITION_KINDS],
    }


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of one policy file, as a plain (JSON-ready) dict."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "authz policy file",
        **sec.FILE.json_schema(),
        "$defs": {
            "authentication": sec.AUTHENTICATION.json_schema(),
            "mtls": sec.MTLS.json_schema(),
            "provider": sec.PROVIDER.json_schema(),
            "api_key_provider": sec.API_KEY_PROVIDER.json_schema(),
            "introspection_provider": introspection_sections.INTROSPECTION_PROVIDER.json_schema(),
            "introspection_cache": introspection_sections.INTROSPECTION_CACHE.json_schema(),
            "token_location": sec.TOKEN_LOCATION.json_schema(),
            "rule": sec.RULE.json_schema(),
            "rate_limit": sec.RATE_LIMIT.json_schema(),
            "from": _entry(
                "Who may ask. Every field given must match (AND); within a field, any value (OR).",
                FROM_FIELDS,
            ),
            "to": _entry(
                "What is asked for. Every field given must match (AND); within a field, any "
                "value (OR).",
                TO_FIELDS,
            ),
            "role_entry": _entry(
                "One permission of the role: like a `to` entry, without `role`.", ROLE_FIELDS
            ),
            "when": _when(),
        },
    }


def schema_text() -> str:
    """The schema as written to `docs/policy.schema.json` and printed by `authz schema`."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"
