"""The `rate_limits` section of a policy file (docs/policy.md, "Rate limits"): its keys,
declared once, and the reader that turns one entry into a `RateLimitSpec`.

`from`, `to` and `when` are read exactly as a rule's (the validator's own readers), so a limit
matches requests the way a rule would. The compiler turns a spec into an
`authz.limits.CompiledLimit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from authz.limits.keys import KINDS, LimitKey, parse_key, supported
from authz.limits.stage import PERIODS
from authz.policy.yaml_source import YMap, YNode, YScalar

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """One validated `rate_limits` entry. `from_`, `to` and `when` as in `RuleSpec`."""

    name: str
    file: str
    line: int
    key: LimitKey
    limit: int
    per: str
    dry_run: bool = False
    from_: tuple[Any, ...] | None = None
    to: tuple[Any, ...] | None = None
    when: tuple[Any, ...] = ()


# The section's keys: (key, JSON Schema with its description, required). The reader below and
# the JSON Schema both walk this table.
KEYS: tuple[tuple[str, Schema, bool], ...] = (
    (
        "name",
        {
            "type": "string",
            "description": "Unique across the whole set, rule names included; the reason of "
            "the 429 in logs, metrics and metadata.",
        },
        True,
    ),
    ("from", {"description": "As in rules: omitted, any client."}, False),
    ("to", {"description": "As in rules: omitted, any request."}, False),
    ("when", {"description": "As in rules: every condition must hold."}, False),
    (
        "key",
        {
            "type": "string",
            "pattern": r"^(principal|request_principal|api_key|source_ip|"
            r"header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|claim:\S+|context:\S+)$",
            "description": "What is counted: " + " | ".join(KINDS) + ". A request without "
            "it is not counted by this limit.",
        },
        True,
    ),
    (
        "limit",
        {"type": "integer", "minimum": 1, "description": "Requests per window, > 0."},
        True,
    ),
    ("per", {"enum": list(PERIODS), "description": "The window: second | minute | hour."}, True),
    (
        "dry_run",
        {
            "type": "boolean",
            "default": False,
            "description": 'Counted and logged as "would limit", never enforced.',
        },
        False,
    ),
)
NAMES = frozenset(k for k, _, _ in KEYS)
WHAT = "a rate limit"
MAX_LIMIT = 10**9  # bounds the counters (and catches a typo such as 1e12)


class Reader(Protocol):
    """What the policy validator offers (its rule readers)."""

    file: str

    def err(self, line: int, message: str) -> None: ...
    def mapping(self, node: YNode, what: str) -> YMap | None: ...
    def fields(self, node: YMap, allowed: frozenset[str], what: str) -> None: ...
    def name(self, node: YNode, what: str) -> str | None: ...
    def string(self, node: YNode, what: str) -> str | None: ...
    def boolean(self, node: YNode, what: str) -> bool | None: ...
    def seq(self, node: YNode, what: str) -> tuple[YNode, ...] | None: ...
    def from_entry(self, node: YNode) -> Any: ...
    def to_entry(self, node: YNode, what: str, in_role: bool) -> Any: ...
    def condition(self, node: YNode) -> Any: ...


def read_rate_limit(v: Reader, node: YNode) -> RateLimitSpec | None:
    """One entry of `rate_limits`; every problem reported through `v` with its line."""
    m = v.mapping(node, WHAT)
    if m is None:
        return None
    v.fields(m, NAMES, WHAT)
    problems_before = _count(v)
    for required_key in (k for k, _, required in KEYS if required):
        if required_key not in m.items:
            v.err(m.line, f"a rate limit needs `{required_key}`")
    name = v.name(m.items["name"], "rate limit name") if "name" in m.items else None
    key = _key(v, m.items["key"]) if "key" in m.items else None
    limit = _limit(v, m.items["limit"]) if "limit" in m.items else None
    per = _per(v, m.items["per"]) if "per" in m.items else None
    dry_run = bool(v.boolean(m.items["dry_run"], "dry_run")) if "dry_run" in m.items else False
    from_ = _listed(v, m, "from", v.from_entry)
    to = _listed(v, m, "to", lambda n: v.to_entry(n, "a `to` entry", False))
    when = _listed(v, m, "when", v.condition) or ()
    if _count(v) > problems_before or None in (name, key, limit, per):
        return None
    assert name is not None and key is not None and limit is not None and per is not None
    return RateLimitSpec(name, v.file, m.line, key, limit, per, dry_run, from_, to, when)


def _count(v: Reader) -> int:
    problems: list[object] = getattr(v, "problems", [])
    return len(problems)


def _listed(v: Reader, m: YMap, key: str, read: Any) -> tuple[Any, ...] | None:
    if key not in m.items:
        return None
    items = v.seq(m.items[key], key)
    if items is None:
        return None
    return tuple(x for x in (read(i) for i in items) if x is not None)


def _key(v: Reader, node: YNode) -> LimitKey | None:
    text = v.string(node, "key")
    if text is None:
        return None
    try:
        key = parse_key(text.strip())
    except ValueError as exc:
        v.err(node.line, str(exc))
        return None
    if not supported(key):
        v.err(node.line, f"key {text!r} is not supported by this version")
        return None
    return key


def _limit(v: Reader, node: YNode) -> int | None:
    value = node.value if isinstance(node, YScalar) else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_LIMIT:
        v.err(node.line, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        return None
    return value


def _per(v: Reader, node: YNode) -> str | None:
    text = v.string(node, "per")
    if text is not None and text not in PERIODS:
        v.err(node.line, f"per must be one of {', '.join(PERIODS)}, not {text!r}")
        return None
    return text


def json_schema(from_ref: Schema, to_ref: Schema, when_ref: Schema) -> Schema:
    """The JSON Schema of one `rate_limits` entry, from `KEYS`."""
    listed = {"from": from_ref, "to": to_ref, "when": when_ref}
    properties: Schema = {}
    for key, schema, _ in KEYS:
        if key in listed:
            schema = {"type": "array", "minItems": 1, "items": listed[key], **schema}
        properties[key] = schema
    return {
        "type": "object",
        "description": "Counted after the rules allowed a request; over the limit: 429.",
        "additionalProperties": False,
        "required": [k for k, _, required in KEYS if required],
        "properties": properties,
    }
