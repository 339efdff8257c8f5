"""`authz replay`: re-decide logged requests under a candidate policy set and report the flips.

Each record (decision log v2, docs/operations.md "Decision log format") becomes the request and
identity the service saw, through the same `prepare` as `authz test` (path normalization, host
lookup, trust domains, claim checks at the record's time) and the same evaluator:

* the workload is the logged principal (or the peer principal the logging set did not trust),
  judged again against the candidate's trust domains;
* a verified token becomes its logged claims (`iss`, `sub`, `aud` and those conditions read),
  checked again against the candidate's providers (issuer, audience) at the record's time;
* a token that was rejected stays rejected (its signature cannot be checked again);
* a request refused before policy (unreadable, over a limit, a refused peer certificate)
  is not re-decided: no policy change can alter that answer;
* a 429 of a rate limit was allowed by the rules first: it is replayed as that allow (counts
  cannot be replayed; a candidate that denies it shows as allow->deny).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from authz.audit.logs import record_timestamp
from authz.audit.usage import cut
from authz.authoring.scenario import Scenario, decide, prepare
from authz.engine import rejection
from authz.errors import TokenRejected
from authz.model import Decision
from authz.policy import PolicySet

ALLOW_TO_DENY, DENY_TO_ALLOW, STATUS = "allow->deny", "deny->allow", "status"
RATE_LIMITED = 429
EXAMPLES = 3  # per group
MAX_GROUPS = 1000  # per kind; keys come from the log, so later ones share OTHER
OTHER = "(other)"


def scenario_of(record: dict[str, Any]) -> Scenario | None:
    """The request of a record, or None when it was refused before policy could see it."""
    method, host = record.get("method"), record.get("host")
    path = record.get("raw_path") or record.get("path")
    if not (isinstance(method, str) and isinstance(host, str) and isinstance(path, str)):
        return None
    if record.get("token") == "unchecked":
        return None
    headers = record.get("headers")
    claims = record.get("claims") if record.get("token") == "verified" else None
    port = record.get("port")
    api_key, context = record.get("api_key_principal"), record.get("context")
    return Scenario(
        method=method,
        path=path,
        host=host,
        principal=record.get("principal") or record.get("peer_principal") or None,
        headers=headers if isinstance(headers, dict) else {},
        claims=claims if isinstance(claims, dict) else None,
        source_ip=record.get("source"),
        port=port if isinstance(port, int) else None,
        # The key by its principal, judged against the candidate's key files; the route's
        # context as logged. (The query string is never logged, so `query` conditions are
        # re-decided as if it were empty.)
        api_key=api_key if isinstance(api_key, str) else None,
        context=context if isinstance(context, dict) else {},
    )


def redecide(policy_set: PolicySet, record: dict[str, Any]) -> Decision | None:
    """The candidate's decision for a logged request; None when it cannot be re-decided."""
    scenario = scenario_of(record)
    if scenario is None:
        return None
    now = record_timestamp(record) or 0.0
    prepared = prepare(policy_set, scenario, now)
    if prepared.host_policy is not None and record.get("token") == "rejected":
        reason = record.get("token_reason") or "jwt_invalid"
        return rejection(TokenRejected("rejected when logged", reason=str(reason)))
    return decide(prepared)


@dataclass(slots=True)
class Group:
    kind: str  # ALLOW_TO_DENY, DENY_TO_ALLOW or STATUS
    key: str  # the rule that allowed (allow->deny), that allows now (deny->allow), or reasons
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ReplayReport:
    revision: str
    replayed: int = 0
    not_replayable: int = 0  # refused before policy
    unchanged: int = 0
    rule_changes: int = 0  # same decision and status, another rule or reason
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)  # groups of each kind

    def count(self, kind: str) -> int:
        return sum(g.count for g in self.groups.values() if g.kind == kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate_revision": self.revision,
            "replayed": self.replayed,
            "not_replayable": self.not_replayable,
            "unchanged": self.unchanged,
            "rule_changes": self.rule_changes,
            "flips": {k: self.count(k) for k in (ALLOW_TO_DENY, DENY_TO_ALLOW, STATUS)},
            "groups": [
                {"kind": g.kind, "rule": g.key, "count": g.count, "examples": g.examples}
                for g in self.sorted_groups()
            ],
        }

    def sorted_groups(self) -> list[Group]:
        order = {ALLOW_TO_DENY: 0, DENY_TO_ALLOW: 1, STATUS: 2}
        return sorted(self.groups.values(), key=lambda g: (order[g.kind], -g.count, g.key))


def _example(record: dict[str, Any], new: Decision) -> dict[str, Any]:
    def logged(name: str) -> str | None:
        value = record.get(name)
        return cut(value) if isinstance(value, str) else None

    return {
        "time": logged("time"),
        "decision_id": logged("decision_id"),
        "request": cut(f"{record.get('method')} {record.get('host')}{record.get('path')}"),
        "principal": logged("principal"),
        "request_principal": logged("request_principal"),
        "was": cut(f"{record.get('decision')} {record.get('status')} {record.get('reason')}"),
        "now": f"{'allow' if new.allowed else 'deny'} {new.status} {new.reason}",
    }


def compare(record: dict[str, Any], new: Decision) -> tuple[str, str] | None:
    """How `new` differs from the logged decision: (ALLOW_TO_DENY, the rule that allowed),
    (DENY_TO_ALLOW, the rule that allows now), (STATUS, "was -> now"), or None when the answer
    is the same (another rule or reason giving the same allow or deny and status is the same)."""
    if record.get("status") == RATE_LIMITED:
        # The rules allowed it, then a rate limit counted it out: compare the rules only.
        if new.allowed:
            return None
        record = {**record, "decision": "allow", "status": 200}
    was_allowed = record.get("decision") == "allow"
    if was_allowed != new.allowed:
        if was_allowed:
            return ALLOW_TO_DENY, str(record.get("rule") or record.get("reason"))
        return DENY_TO_ALLOW, str(new.rule or new.reason)
    if record.get("status") != new.status:
        was = f"{record.get('reason')} {record.get('status')}"
        return STATUS, f"{was} -> {new.reason} {new.status}"
    return None


def replay(policy_set: PolicySet, records: Iterable[dict[str, Any]]) -> ReplayReport:
    """Re-decide every record under `policy_set`; memory is bounded by the number of groups
    (rules and reason pairs), each keeping a few examples."""
    report = ReplayReport(policy_set.revision)
    for record in records:
        new = redecide(policy_set, record)
        if new is None:
            report.not_replayable += 1
            continue
        report.replayed += 1
        change = compare(record, new)
        if change is None:
            report.unchanged += 1
            report.rule_changes += record.get("status") != RATE_LIMITED and (
                record.get("reason") != new.reason
            )
            continue
        kind, key = change
        key = cut(key)
        group = report.groups.get((kind, key))
        if group is None and report.kinds.get(kind, 0) >= MAX_GROUPS:
            key = OTHER
            group = report.groups.get((kind, key))
        if group is None:
            group = report.groups[(kind, key)] = Group(kind, key)
            report.kinds[kind] = report.kinds.get(kind, 0) + 1
        group.count += 1
        if len(group.examples) < EXAMPLES:
            group.examples.append(_example(record, new))
    return report


def report_text(report: ReplayReport, lines_read: int, bad_lines: int) -> str:
    out = [
        f"replayed {report.replayed} requests under candidate revision {report.revision} "
        f"({report.not_replayable} refused before policy, {bad_lines} unreadable lines of "
        f"{lines_read})",
        f"flips: {report.count(ALLOW_TO_DENY)} allow->deny, {report.count(DENY_TO_ALLOW)} "
        f"deny->allow, {report.count(STATUS)} status changes; {report.rule_changes} decided by "
        "another rule with the same outcome",
    ]
    labels = {
        ALLOW_TO_DENY: "allow->deny, was allowed by",
        DENY_TO_ALLOW: "deny->allow, now allowed by",
        STATUS: "status change",
    }
    for group in report.sorted_groups():
        out.append(f"{labels[group.kind]} {group.key}: {group.count}")
        for ex in group.examples:
            who = " + ".join(p for p in (ex["principal"], ex["request_principal"]) if p)
            who = who or "anonymous"
            out.append(
                f"    {ex['time']} {ex['request']} as {who}: was {ex['was']}, now {ex['now']}"
            )
    return "\n".join(out)
