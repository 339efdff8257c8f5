"""Which parts of a policy set the policy tests exercise (`authz test --coverage`).

The items are the rules, every entry of every role, and every `when` condition. A case is run
through the same `prepare` as `authz test` and the service's own compiled objects answer:
the rule index says which rules the evaluator looks at (`candidates`: "evaluated"), and each
compiled rule, entry and condition says whether it matches (`matches`, `check`). Nothing here
re-implements matching, so coverage cannot disagree with the service.

* a rule is evaluated when the index hands it to the evaluator, matched when it matches;
* a role entry is evaluated with its rule, matched when its rule matched through it;
* a condition is evaluated when the evaluator reaches it (its rule's `to` and `from` matched,
  and every earlier condition held: the evaluator stops at the first that fails), matched
  when it held.

An item is covered when it matched at least once. (Rate limits, issue 16, become one more
`kind` here: each limit counted when a request reaches it.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from authz.authoring.cases import TestCase
from authz.authoring.scenario import prepare
from authz.policy import PolicySet
from authz.policy.decide.context import RequestContext
from authz.policy.language.schema import ToSpec

RULE, ROLE_ENTRY, CONDITION = "rule", "role entry", "condition"


@dataclass(slots=True)
class Item:
    """One thing a test can exercise, with how often the cases evaluated and matched it."""

    kind: str
    file: str
    line: int
    text: str
    evaluated: int = 0
    matched: int = 0

    @property
    def covered(self) -> bool:
        return self.matched > 0


@dataclass(frozen=True, slots=True)
class Coverage:
    items: tuple[Item, ...]  # by file, then line
    cases: int

    @property
    def covered(self) -> int:
        return sum(1 for i in self.items if i.covered)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / len(self.items) if self.items else 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "covered": self.covered,
            "total": len(self.items),
            "percent": round(self.percent, 1),
            "items": [{**asdict(i), "covered": i.covered} for i in self.items],
        }


def _entry_text(entry: ToSpec) -> str:
    parts = []
    for field in ("methods", "paths", "hosts", "ports"):
        values = entry.get(field)
        if values is not None:
            parts.append(f"{field} [{', '.join(str(v) for v in values)}]")
    return " ".join(parts) or "any request"


def measure(policy_set: PolicySet, cases: Iterable[TestCase], now: float | None = None) -> Coverage:
    """Run `cases` against `policy_set` and count what each item did."""
    rules: dict[str, Item] = {}
    roles: dict[tuple[str, int], Item] = {}
    conditions: dict[tuple[str, int], Item] = {}
    for f in policy_set.files:
        for role in f.roles:
            for i, entry in enumerate(role.entries):
                text = f"role {role.name} entry {i + 1}: {_entry_text(entry)}"
                roles[(role.name, i)] = Item(ROLE_ENTRY, role.file, entry.line, text)
    for rule in policy_set.rules:
        how = f"{rule.action}, dry_run" if rule.dry_run else rule.action
        rules[rule.name] = Item(RULE, rule.file, rule.line, f"rule {rule.name} ({how})")
        for j, cond in enumerate(rule.when):
            text = f"when in {rule.name}: {cond.label}"
            conditions[(rule.name, j)] = Item(CONDITION, rule.file, cond.line, text)
    count = 0
    when = time.time() if now is None else now
    for case in cases:
        count += 1
        p = prepare(policy_set, case.scenario, when)
        if p.refused is not None or p.host_policy is None or p.request is None:
            continue  # decided before any rule (a refused path or token, no policy for the host)
        hp = p.host_policy
        ctx = RequestContext(p.request, p.identity, hp.authentication)
        for rule in hp.candidates_of(ctx.method, ctx.paths):
            rules[rule.name].evaluated += 1
            matched = rule.matches(ctx)
            rules[rule.name].matched += matched
            for to_entry in rule.to or ():
                through = matched and to_entry.matches(ctx)
                for role_name, i, role_entry in to_entry.role_entries:
                    item = roles[(role_name, i)]
                    item.evaluated += 1
                    item.matched += through and role_entry.matches(ctx)
            if not rule.to_matches(ctx):
                continue
            if rule.from_ is not None and not any(e.matches(ctx) for e in rule.from_):
                continue
            for j, cond in enumerate(rule.when):
                item = conditions[(rule.name, j)]
                item.evaluated += 1
                if not cond.check(ctx):
                    break
                item.matched += 1
    items = sorted(
        (*rules.values(), *roles.values(), *conditions.values()), key=lambda i: (i.file, i.line)
    )
    return Coverage(tuple(items), count)


def report_text(coverage: Coverage) -> str:
    """Per file, each item with its counts; uncovered items marked."""
    lines: list[str] = []
    current = None
    for item in coverage.items:
        if item.file != current:
            current = item.file
            lines.append(item.file)
        counts = f"matched {item.matched}, evaluated {item.evaluated}"
        flag = "" if item.covered else "  NOT COVERED"
        lines.append(f"  {item.line:>4}  {item.text}  ({counts}){flag}")
    lines.append(
        f"coverage: {coverage.covered}/{len(coverage.items)} items matched "
        f"({coverage.percent:.1f}%) by {coverage.cases} cases"
    )
    return "\n".join(lines)
