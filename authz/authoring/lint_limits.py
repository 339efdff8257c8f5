"""Lint findings about `rate_limits` (called by `authz.authoring.lint.lint`).

* `limit-key-absent`: requests the limit matches may lack its key (no token, no such header);
  such requests are never counted by it, which an author rarely means.
* `unreachable-limit`: no enforced allow rule can allow a request the limit matches, and
  limits only count allowed requests: the limit never counts anything. Judged on the patterns
  alone and conservatively (a finding is certain; some unreachable limits go unreported).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from authz.authoring.lint_findings import Finding, Roles, expand
from authz.limits.keys import parse_key
from authz.policy.language.schema import FileSpec, RuleSpec
from authz.policy.language.spec import RateLimitSpec

CODES = {
    "limit-key-absent": "a rate limit whose key some requests it matches do not have",
    "unreachable-limit": "a rate limit no allow rule can reach (limits count allowed requests)",
}


def limit_findings(files: Iterable[FileSpec], roles: Roles) -> Iterable[Finding]:
    """Findings for every limit of `files` (the validated specs); `roles` by name."""
    files = list(files)
    for f in files:
        for limit in f.rate_limits:
            why = _key_may_be_absent(limit)
            if why is not None:
                yield Finding(
                    limit.file,
                    limit.line,
                    "limit-key-absent",
                    limit.name,
                    f"key {limit.key} can be absent ({why}): such requests are not counted; "
                    "narrow `from`/`when` to requests that have it, or pick another key",
                )
            if not any(
                _may_allow(rule, limit, roles)
                for other in files
                if _share_a_host(f, other)
                for rule in other.rules
            ):
                yield Finding(
                    limit.file,
                    limit.line,
                    "unreachable-limit",
                    limit.name,
                    "no allow rule can allow a request this limit matches: it never counts",
                )


def _key_may_be_absent(limit: RateLimitSpec) -> str | None:
    key = parse_key(limit.key)
    kind, name = key.kind, key.name
    positive = [c for c in limit.when if not c.negated]
    if kind == "source_ip":
        return None  # Envoy always sends the peer address
    if kind == "principal":
        entries = limit.from_ or ()
        if entries and all(
            e.get("principals") is not None or e.get("namespaces") is not None for e in entries
        ):
            return None
        return "a request without an mTLS principal"
    if kind == "request_principal":
        entries = limit.from_ or ()
        if entries and all(
            e.get("request_principals") is not None or e.get("issuers") is not None for e in entries
        ):
            return None
        if any(c.kind == "claim" for c in positive):
            return None
        return "a request without a token"
    if kind == "api_key":
        entries = limit.from_ or ()
        if entries and all(e.get("api_keys") is not None for e in entries):
            return None
        if any(c.kind == "api_key_label" for c in positive):
            return None
        return "a request without an API key"
    if kind in ("header", "claim", "context"):
        if any(c.kind == kind and c.name.lower() == name.lower() for c in positive):
            return None
        return f"a request without {kind} {name}"
    return None


def _share_a_host(a: Any, b: Any) -> bool:
    if a is b or a.hosts is None or b.hosts is None:
        return True
    return any(_host_overlap(x, y) for x in a.hosts for y in b.hosts)


def _host_overlap(x: str, y: str) -> bool:
    if x == y:
        return True
    for pattern, other in ((x, y), (y, x)):
        if pattern.startswith("*."):
            name = other[2:] if other.startswith("*.") else other
            if name.endswith("." + pattern[2:]) or name == pattern[2:]:
                return True
    return False


def _may_allow(rule: RuleSpec, limit: RateLimitSpec, roles: Roles) -> bool:
    """Whether `rule` is an enforced allow that may allow some request `limit` matches."""
    if rule.action != "allow" or rule.dry_run:
        return False
    if rule.to is None or limit.to is None:
        return True
    return any(
        _entries_overlap(a, b) for a in expand(rule.to, roles) for b in expand(limit.to, roles)
    )


def _entries_overlap(a: Any, b: Any) -> bool:
    methods_a, methods_b = a.get("methods"), b.get("methods")
    if methods_a is not None and methods_b is not None and not set(methods_a) & set(methods_b):
        return False
    paths_a, paths_b = a.get("paths"), b.get("paths")
    if paths_a is None or paths_b is None:
        return True
    return any(_paths_overlap(p, q) for p in paths_a for q in paths_b)


def _paths_overlap(p: str, q: str) -> bool:
    """False only when no path can match both: their literal beginnings differ."""
    if p.startswith("*") or q.startswith("*"):
        return True
    lp, lq = _literal(p), _literal(q)
    exact_p, exact_q = lp == p, lq == q
    if exact_p and exact_q:
        return p == q
    if exact_p:
        return p.startswith(lq)
    if exact_q:
        return q.startswith(lp)
    return lp.startswith(lq) or lq.startswith(lp)


def _literal(pattern: str) -> str:
    """What every path matching `pattern` starts with."""
    cut = len(pattern)
    for mark in ("{", "*"):
        at = pattern.find(mark)
        if at >= 0:
            cut = min(cut, at)
    return pattern[:cut]
