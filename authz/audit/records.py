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


def _reason_code(value: Any) -> bool:
    return isinstance(value, str) and (value in CODES or not value)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(type(item) is str for item in value)


def _text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(type(v) is str for v in value.values())


def _shadow(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict)
        and type(item.get("rule")) is str
        and type(item.get("would", "")) is str
        for item in value
    )


def _claims(value: Any) -> bool:
    """A JSON object nested at most MAX_CLAIM_DEPTH deep (checked without recursion)."""
    if not isinstance(value, dict):
        return False
    if not any(isinstance(v, dict | list) for v in value.values()):
        return True  # flat: the usual claims
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_CLAIM_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        pending.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


# name -> (the exact JSON types it may have, or a check for a structured value; what it is).
# `type(v) is int` rather than isinstance: a JSON true is no status code.
FIELDS: Mapping[str, tuple[tuple[type, ...] | Check, str]] = {
    "time": ((str,), "a string"),
    "decision_id": ((str,), "a string"),
    "decision": ((str,), "a string"),
    "status": ((int,), "an integer"),
    "reason": ((str,), "a string"),
    "rule": ((str,), "a string"),
    "dry_run": (_shadow, 'a list of {"rule": ..., "would": ...}'),
    "audit": (_texts, "a list of strings"),
    "principal": ((str,), "a string"),
    "request_principal": ((str,), "a string"),
    "method": ((str,), "a string"),
    "host": ((str,), "a string"),
    "path": ((str,), "a string"),
    "source": ((str,), "a string"),
    "request_id": ((str,), "a string"),
    "policy_revision": ((str,), "a string"),
    "duration_ms": ((int, float), "a number"),
    "v": ((int,), "an integer"),
    "raw_path": ((str,), "a string"),
    "port": ((int,), "an integer"),
    "peer_principal": ((str,), "a string"),
    "token": ((str,), "a string"),
    "token_reason": (_reason_code, "a reason code"),
    "api_key_principal": ((str,), "a string"),
    "context": (_text_map, "an object of strings"),
    "headers": (_text_map, "an object of strings"),
    "claims": (_claims, f"an object nested at most {MAX_CLAIM_DEPTH} deep"),
    "cert_not_after": ((str,), "a string"),
}


# The shapes (field names, value types) of records already checked whole: for a record of a
# known shape only the contents of its lists and objects are checked (a log repeats a few
# shapes a million times). Bounded: a log of ever new shapes is checked whole each time.
_GOOD_SHAPES: set[tuple[object, ...]] = set()
MAX_SHAPES = 1024
_CONTAINERS = tuple(
    (name, kind) for name, (kind, _) in FIELDS.items() if not isinstance(kind, tuple)
)


def record_problem(record: Any) -> str | None:
    """Why `record` (a parsed JSON line) is not a decision record, or None when it is one."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_json_type(record)}"
    if not isinstance(record.get("decision"), str):
        # Another JSON log (the service's own `--log-format json` lines, say) is no traffic.
        return "no 'decision': not a decision record"
    shape = (*record, *map(type, record.values()))
    if shape in _GOOD_SHAPES:
        for name, check in _CONTAINERS:
            value = record.get(name)
            if value and not check(value):
                return f"{name!r} is {_json_type(value)}, not {FIELDS[name][1]}"
        return None
    for name, value in record.items():
        declared = FIELDS.get(name)
        if declared is None or value is None:
            continue  # a field of a newer writer, or an absent value
        kind, expected = declared
        if not (type(value) in kind if isinstance(kind, tuple) else kind(value)):
            return f"{name!r} is {_json_type(value)}, not {expected}"
    if len(_GOOD_SHAPES) < MAX_SHAPES:
        _GOOD_SHAPES.add(shape)
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
