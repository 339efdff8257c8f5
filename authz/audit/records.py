"""What a decision log record may hold: one declaration per field (docs/operations.md, "Decision
log format"), checked before `authz usage` or `authz replay` reads a record.

A log is input like any other: a line may be torn, edited by hand, or written by someone who
wants the audit to crash or lie. A record whose fields do not have their types is not read at
all (the caller counts it as a bad line and says why), so the audit code below can trust every
field it reads. Each field may be absent or null (older records lack the newer fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from authz.reasons import CODES

MAX_CLAIM_DEPTH = 32  # nesting of a claim value; the log's own writer never goes near it

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reason_code(value: Any) -> bool:
    return isinstance(value, str) and (value in CODES or not value)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _shadow(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict)
        and isinstance(item.get("rule"), str)
        and isinstance(item.get("would", ""), str)
        for item in value
    )


def _claims(value: Any) -> bool:
    """A JSON object nested at most MAX_CLAIM_DEPTH deep (checked without recursion)."""
    if not isinstance(value, dict):
        return False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_CLAIM_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


FIELDS: Mapping[str, tuple[Check, str]] = {
    "time": (_text, "a string"),
    "decision_id": (_text, "a string"),
    "decision": (_text, "a string"),
    "status": (_integer, "an integer"),
    "reason": (_text, "a string"),
    "rule": (_text, "a string"),
    "dry_run": (_shadow, 'a list of {"rule": ..., "would": ...}'),
    "audit": (_texts, "a list of strings"),
    "principal": (_text, "a string"),
    "request_principal": (_text, "a string"),
    "method": (_text, "a string"),
    "host": (_text, "a string"),
    "path": (_text, "a string"),
    "source": (_text, "a string"),
    "request_id": (_text, "a string"),
    "policy_revision": (_text, "a string"),
    "duration_ms": (_number, "a number"),
    "v": (_integer, "an integer"),
    "raw_path": (_text, "a string"),
    "port": (_integer, "an integer"),
    "peer_principal": (_text, "a string"),
    "token": (_text, "a string"),
    "token_reason": (_reason_code, "a reason code"),
    "api_key_principal": (_text, "a string"),
    "context": (_text_map, "an object of strings"),
    "headers": (_text_map, "an object of strings"),
    "claims": (_claims, f"an object nested at most {MAX_CLAIM_DEPTH} deep"),
    "cert_not_after": (_text, "a string"),
}


def record_problem(record: Any) -> str | None:
    """Why `record` (a parsed JSON line) is not a decision record, or None when it is one."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_json_type(record)}"
    for name, value in record.items():
        declared = FIELDS.get(name)
        if declared is None or value is None:
            continue  # a field of a newer writer, or an absent value
        check, expected = declared
        if not check(value):
            return f"{name!r} is {_json_type(value)}, not {expected}"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
