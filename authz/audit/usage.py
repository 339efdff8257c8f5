"""`authz usage`: what logged traffic actually used of a policy set.

One pass over the records, O(1) work per record, and memory bounded by the policy, not by the
traffic: every counter keyed by something clients choose (principals, paths, sources) keeps at
most `LIMIT` keys, each cut to `MAX_KEY` characters, and counts the rest under "(other)".

"Matched" is what the log can show: the rule that decided a request, the dry_run rules that
would have decided it and the audit rules that matched. An allow rule that matched while a deny
rule won is not visible (the log names the deciding rule only).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from authz.policy import PolicySet
from authz.policy.language import patterns as pat
from authz.policy.language.schema import RuleSpec, ToSpec

LIMIT = 1000  # distinct keys per counter
MAX_KEY = 512  # characters of a key kept (a log line may hold a megabyte "principal")
OTHER = "(other)"
TOP = 10


def cut(text: str) -> str:
    """`text` as a report keeps it: at most MAX_KEY characters."""
    return text if len(text) <= MAX_KEY else text[:MAX_KEY] + "..."


class BoundedCounter:
    """A Counter of at most `limit` keys; later new keys are counted under OTHER."""

    __slots__ = ("counts", "limit")

    def __init__(self, limit: int = LIMIT) -> None:
        self.counts: Counter[str] = Counter()
        self.limit = limit

    def add(self, key: str, n: int = 1) -> None:
        key = cut(key)
        counts = self.counts
        if key in counts or len(counts) < self.limit:
            counts[key] += n
        else:
            counts[OTHER] += n

    def top(self, n: int = TOP) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _to_entries(rule: RuleSpec, roles: dict[str, tuple[ToSpec, ...]]) -> list[ToSpec]:
    """The rule's `to` entries, a `role` replaced by its entries (the entry's methods/paths
    apply where the role entry leaves them open)."""
    out: list[ToSpec] = []
    for entry in rule.to or ():
        if entry.get("role") is None:
            out.append(entry)
            continue
        for name in entry.get("role"):
            for r in roles.get(name, ()):
                methods = r.get("methods") if r.get("methods") is not None else entry.get("methods")
                paths = r.get("paths") if r.get("paths") is not None else entry.get("paths")
                out.append(ToSpec.of(r.line, methods=methods, paths=paths))
    return out


def _shape(literal: str, path: str) -> str:
    """`path` grouped below the pattern's literal prefix: one more segment is kept, the rest
    becomes `{*}` (one segment) or `{**}` (more): /api/ + /api/orders/42 -> /api/orders/{*}."""
    base = literal if literal.endswith("/") else literal.rsplit("/", 1)[0] + "/"
    rest = path[len(base) :] if path.startswith(base) else path.lstrip("/")
    segments = rest.split("/") if rest else []
    if len(segments) <= 1:
        return base + rest
    tail = "{*}" if len(segments) == 2 else "{**}"
    return f"{base}{segments[0]}/{tail}"


@dataclass(slots=True)
class RuleUsage:
    rule: RuleSpec
    # What the rule permits, per `to` entry (roles expanded): (methods, paths), None for any.
    entries: list[tuple[tuple[str, ...] | None, tuple[str, ...] | None]]
    methods: tuple[str, ...] | None  # the union; None: any method
    paths: tuple[str, ...] | None  # the union; None: any path
    matchers: list[tuple[str, str, pat.PathPatterns]]  # (pattern, literal prefix, matcher)
    decided: int = 0
    would: int = 0  # dry_run matches
    audited: int = 0
    principals: BoundedCounter = field(default_factory=BoundedCounter)
    request_principals: BoundedCounter = field(default_factory=BoundedCounter)
    used: BoundedCounter = field(default_factory=BoundedCounter)  # "METHOD shape"
    used_methods: BoundedCounter = field(default_factory=BoundedCounter)

    def shape(self, path: str) -> str:
        for pattern, literal, matcher in self.matchers:
            if matcher.matches(path):
                wild = "{**}" in pattern or pattern.endswith("*") or pattern.startswith("*")
                return _shape(literal, path) if wild else pattern
        return _shape("/", path)


def _literal(pattern: str) -> str:
    if pattern.startswith("*"):
        return "/"
    cut = min((i for i in (pattern.find("{"), pattern.find("*")) if i >= 0), default=len(pattern))
    return pattern[:cut]


@dataclass(slots=True)
class Usage:
    revision: str
    rules: dict[str, RuleUsage]
    records: int = 0
    unknown_rules: BoundedCounter = field(default_factory=BoundedCounter)
    denied_principals: BoundedCounter = field(default_factory=BoundedCounter)
    deny_reasons: BoundedCounter = field(default_factory=BoundedCounter)
    invalid_tokens: BoundedCounter = field(default_factory=BoundedCounter)  # by source
    invalid_token_reasons: BoundedCounter = field(default_factory=BoundedCounter)
    invalid_paths: BoundedCounter = field(default_factory=BoundedCounter)  # by source
    cert_expiry: dict[str, str] = field(default_factory=dict)  # principal -> soonest notAfter

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        rules = self.rules
        allowed = record.get("decision") == "allow"
        principal = record.get("principal")
        request_principal = record.get("request_principal")
        name = record.get("rule")
        if isinstance(name, str):
            usage = rules.get(name)
            if usage is None:
                self.unknown_rules.add(name)
            else:
                usage.decided += 1
                if allowed:
                    method = str(record.get("method"))
                    if principal:
                        usage.principals.add(principal)
                    if request_principal:
                        usage.request_principals.add(request_principal)
                    usage.used_methods.add(method)
                    usage.used.add(f"{method} {usage.shape(str(record.get('path')))}")
        for match in record.get("dry_run") or ():
            usage = rules.get(str(match.get("rule"))) if isinstance(match, dict) else None
            if usage is not None:
                usage.would += 1
        for audit in record.get("audit") or ():
            usage = rules.get(audit) if isinstance(audit, str) else None
            if usage is not None:
                usage.audited += 1
        source = str(record.get("source") or "-")
        if not allowed:
            self.denied_principals.add(principal or request_principal or f"anonymous {source}")
            self.deny_reasons.add(str(record.get("reason")))
        if record.get("token") == "rejected":
            self.invalid_tokens.add(source)
            self.invalid_token_reasons.add(str(record.get("token_reason")))
        if record.get("reason") == "invalid_path":
            self.invalid_paths.add(source)
        not_after = record.get("cert_not_after")
        if isinstance(not_after, str) and principal:
            principal, not_after = cut(principal), cut(not_after)
            known = self.cert_expiry.get(principal)
            room = len(self.cert_expiry) < LIMIT * 10
            if (known is None and room) or (known is not None and not_after < known):
                self.cert_expiry[principal] = not_after

    # -- the findings ---------------------------------------------------------------------

    def never_matched(self) -> list[RuleUsage]:
        return [u for u in self.rules.values() if not (u.decided or u.would or u.audited)]

    def only_dry_run(self) -> list[RuleUsage]:
        return [u for u in self.rules.values() if u.would and not u.decided]

    def expiring(self, before: str) -> list[tuple[str, str]]:
        """Principals whose soonest certificate notAfter is before `before` (RFC 3339)."""
        return sorted(
            ((p, t) for p, t in self.cert_expiry.items() if t < before), key=lambda pt: pt[1]
        )


def new_usage(policy_set: PolicySet) -> Usage:
    roles = {r.name: r.entries for f in policy_set.files for r in f.roles}
    rules: dict[str, RuleUsage] = {}
    for compiled in policy_set.rules:
        spec = compiled.spec
        entries = _to_entries(spec, roles) if spec.to is not None else []
        methods: tuple[str, ...] | None = None
        paths: tuple[str, ...] | None = None
        if entries and all(e.get("methods") is not None for e in entries):
            methods = tuple(dict.fromkeys(m for e in entries for m in e.get("methods") or ()))
        if entries and all(e.get("paths") is not None for e in entries):
            paths = tuple(dict.fromkeys(p for e in entries for p in e.get("paths") or ()))
        matchers = [(p, _literal(p), pat.path_patterns([p])) for p in paths or ()]
        permits = [(e.get("methods"), e.get("paths")) for e in entries] or [(None, None)]
        rules[spec.name] = RuleUsage(spec, permits, methods, paths, matchers)
    return Usage(policy_set.revision, rules)


def measure(policy_set: PolicySet, records: Iterable[dict[str, Any]]) -> Usage:
    usage = new_usage(policy_set)
    for record in records:
        usage.add(record)
    return usage


# --- reports --------------------------------------------------------------------------------


def _permits(u: RuleUsage) -> str:
    parts = []
    for methods, paths in u.entries:
        p = ", ".join(paths) if paths is not None else "any path"
        m = ", ".join(methods) if methods is not None else "any method"
        parts.append(f"{p} for {m}")
    return "allows " + " and ".join(parts)


def _used(u: RuleUsage) -> str:
    shapes = ", ".join(f"{k} ({n})" for k, n in u.used.top(len(u.used.counts)))
    unused = [m for m in u.methods or () if m not in u.used_methods.counts]
    tail = f"; never used: {', '.join(unused)}" if unused else ""
    return f"used: {shapes}{tail}"


def to_json(usage: Usage, expiring: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    rules = []
    for u in usage.rules.values():
        entry: dict[str, Any] = {
            "rule": u.rule.name,
            "file": u.rule.file,
            "line": u.rule.line,
            "action": u.rule.action,
            "dry_run": u.rule.dry_run,
            "decided": u.decided,
            "dry_run_matches": u.would,
            "audit_matches": u.audited,
        }
        if u.rule.action == "allow":
            entry.update(
                permits=[{"methods": m, "paths": p} for m, p in u.entries],
                used=dict(u.used.top(len(u.used.counts))),
                principals=dict(u.principals.top(len(u.principals.counts))),
                request_principals=dict(u.request_principals.top(len(u.request_principals.counts))),
            )
        rules.append(entry)
    doc: dict[str, Any] = {
        "policy_revision": usage.revision,
        "records": usage.records,
        "rules": rules,
        "never_matched": [u.rule.name for u in usage.never_matched()],
        "only_dry_run": [u.rule.name for u in usage.only_dry_run()],
        "unknown_rules": dict(usage.unknown_rules.counts),
        "top_denied_principals": dict(usage.denied_principals.top()),
        "top_deny_reasons": dict(usage.deny_reasons.top()),
        "invalid_tokens_by_source": dict(usage.invalid_tokens.top()),
        "invalid_token_reasons": dict(usage.invalid_token_reasons.top()),
        "invalid_paths_by_source": dict(usage.invalid_paths.top()),
    }
    if expiring is not None:
        doc["certificates_expiring"] = [{"principal": p, "not_after": t} for p, t in expiring]
    return doc


def report_text(usage: Usage, expiring: list[tuple[str, str]] | None = None) -> str:
    out = [f"{usage.records} requests against policy revision {usage.revision}"]
    out.append("allow rules:")
    for u in usage.rules.values():
        if u.rule.action != "allow" or u.rule.dry_run:
            continue
        where = f"{u.rule.file}:{u.rule.line}"
        if not u.decided:
            out.append(f"  {u.rule.name} ({where}): {_permits(u)}; never used")
            continue
        out.append(f"  {u.rule.name} ({where}): {_permits(u)}; {_used(u)}")
        for label, counter in (
            ("principals", u.principals),
            ("request principals", u.request_principals),
        ):
            shown = ", ".join(f"{k} ({n})" for k, n in counter.top())
            if shown:
                out.append(f"      {label}: {shown}")

    def listing(title: str, items: list[str]) -> None:
        out.append(f"{title}: {', '.join(items) if items else 'none'}")

    listing(
        "rules never matched",
        [f"{u.rule.name} ({u.rule.file}:{u.rule.line})" for u in usage.never_matched()],
    )
    listing(
        "rules matched only in dry-run",
        [f"{u.rule.name} ({u.would})" for u in usage.only_dry_run()],
    )
    for title, counter in (
        ("top denied principals", usage.denied_principals),
        ("top deny reasons", usage.deny_reasons),
        ("invalid tokens by source", usage.invalid_tokens),
        ("invalid token reasons", usage.invalid_token_reasons),
        ("invalid paths by source", usage.invalid_paths),
    ):
        listing(title, [f"{k} ({n})" for k, n in counter.top()])
    if usage.unknown_rules.counts:
        listing(
            "rules in the log but not in the policy",
            [f"{k} ({n})" for k, n in usage.unknown_rules.top()],
        )
    if expiring is not None:
        listing("certificates expiring", [f"{p} (notAfter {t})" for p, t in expiring])
    return "\n".join(out)
