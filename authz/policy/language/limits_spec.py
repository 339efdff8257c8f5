"""Reading one `rate_limits` entry (docs/policy.md, "Rate limits") into a `RateLimitSpec`.

The keys are declared in `authz.policy.language.sections.RATE_LIMIT` (which also writes the JSON
Schema); `from`, `to` and `when` go through the rules' own readers, so a limit matches requests
exactly as a rule would. The compiler turns the spec into an `authz.limits.CompiledLimit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from authz.limits.keys import parse_key, supported
from authz.limits.stage import PERIODS
from authz.policy.language import sections as sec
from authz.policy.language.spec import RateLimitSpec
from authz.policy.language.yaml_source import YMap, YNode, YScalar

T = TypeVar("T")


class Reader(Protocol):
    """What the policy validator offers (`authz.policy.language.validate_rules.RuleChecker`)."""

    file: str
    problems: list[Any]

    def err(self, line: int, message: str) -> None: ...
    def section(self, node: YNode, section: sec.Section) -> YMap | None: ...
    def name(self, node: YNode, what: str) -> str | None: ...
    def string(self, node: YNode, what: str) -> str | None: ...
    def boolean(self, node: YNode, what: str) -> bool | None: ...
    def listed(
        self, m: YMap, key: str, read: Callable[[YNode], T | None]
    ) -> tuple[T, ...] | None: ...
    def from_entry(self, node: YNode) -> Any: ...
    def to_entry(self, node: YNode, what: str, in_role: bool) -> Any: ...
    def condition(self, node: YNode) -> Any: ...


def read_rate_limit(v: Reader, node: YNode) -> RateLimitSpec | None:
    """One entry of `rate_limits`; every problem reported through `v` with its line."""
    m = v.section(node, sec.RATE_LIMIT)
    if m is None:
        return None
    before = len(v.problems)
    for declared in sec.RATE_LIMIT.keys:
        if declared.required and declared.name not in m.items:
            v.err(m.line, f"a rate limit needs `{declared.name}`")
    name = v.name(m.items["name"], "rate limit name") if "name" in m.items else None
    key = _key(v, m.items["key"]) if "key" in m.items else None
    limit = _limit(v, m.items["limit"]) if "limit" in m.items else None
    per = _per(v, m.items["per"]) if "per" in m.items else None
    dry_run = bool(v.boolean(m.items["dry_run"], "dry_run")) if "dry_run" in m.items else False
    from_ = v.listed(m, "from", v.from_entry)
    to = v.listed(m, "to", lambda n: v.to_entry(n, "a `to` entry", False))
    when = v.listed(m, "when", v.condition) or ()
    if len(v.problems) > before or name is None or key is None or limit is None or per is None:
        return None
    return RateLimitSpec(name, v.file, m.line, key, limit, per, dry_run, from_, to, when)


def _key(v: Reader, node: YNode) -> str | None:
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
    return str(key)


def _limit(v: Reader, node: YNode) -> int | None:
    value = node.value if isinstance(node, YScalar) else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= sec.MAX_LIMIT:
        v.err(node.line, f"limit must be a whole number from 1 to {sec.MAX_LIMIT}")
        return None
    return value


def _per(v: Reader, node: YNode) -> str | None:
    text = v.string(node, "per")
    if text is not None and text not in PERIODS:
        v.err(node.line, f"per must be one of {', '.join(PERIODS)}, not {text!r}")
        return None
    return text
