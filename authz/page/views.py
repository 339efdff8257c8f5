"""What the decision page shows, as JSON-ready data: the overview, the recent decisions, and one
decision with its explanation under the current policy set.

The HTML (authz.page.html) and the JSON API (`/api/...`) render the same dicts, so a script and
a person always see the same facts. Everything here reads what the service already holds: the
policy set in force, the last reload, the key sources, the rate-limit store, and the decision
log's own records (authz.observe.recent), which carry no token, key or cookie value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from authz.audit.logs import record_timestamp
from authz.audit.replay import compare, redecide, scenario_of
from authz.authoring.scenario import explain_scenario
from authz.identity.keys import KeyState
from authz.observe.decision_log import rfc3339
from authz.observe.recent import FILTERS, RecentDecisions
from authz.policy import PolicySet
from authz.reload import ReloadRecord

# How many records one list shows at most (the ring may hold more; filters narrow it).
LIST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the page reads the service's state; each is called once per page view."""

    policy: Callable[[], PolicySet]
    policy_directory: str
    started_at: float
    last_reload: Callable[[], ReloadRecord | None]
    key_states: Callable[[], Iterable[KeyState]]
    rate_limits: Callable[[], Mapping[str, str | float]]
    recent: RecentDecisions
    clock: Callable[[], float] = time.time


def overview(sources: Sources) -> dict[str, Any]:
    policy = sources.policy()
    now = sources.clock()
    reload = sources.last_reload()
    loaded_at = sources.started_at
    if reload is not None and reload.loaded_at is not None:
        loaded_at = reload.loaded_at
    files = [
        {
            "file": _relative(spec.file, sources.policy_directory),
            "hosts": list(spec.hosts) if spec.hosts is not None else ["*"],
            "rules": len(spec.rules),
            "rate_limits": len(spec.rate_limits),
        }
        for spec in policy.files
    ]
    held, held_bytes = sources.recent.usage()
    return {
        "revision": policy.revision,
        "loaded_at": rfc3339(loaded_at),
        "last_reload": _reload(reload),
        "files": files,
        "hosts": sorted({host for spec in policy.files for host in spec.hosts or ("*",)}),
        "rules": policy.rule_count,
        "jwt_providers": [
            {
                "issuer": state.issuer,
                "state": state.state,
                "keys_age_seconds": (
                    round(now - state.loaded_at) if state.loaded_at is not None else None
                ),
                "error": state.error,
            }
            for state in sources.key_states()
        ],
        "rate_limit_store": dict(sources.rate_limits()),
        "decisions_by_minute": [
            {"minute": rfc3339(start), "reasons": counts}
            for start, counts in sources.recent.timeline()
        ],
        "recent": {
            "held": held,
            "bytes": held_bytes,
            "max_entries": sources.recent.entries,
            "max_bytes": sources.recent.budget,
        },
    }


def _reload(reload: ReloadRecord | None) -> dict[str, Any] | None:
    if reload is None:
        return None
    return {
        "time": rfc3339(reload.time),
        "outcome": reload.outcome,
        "revision": reload.revision,
        "problems": list(reload.problems),
    }


def _relative(file: str, directory: str) -> str:
    try:
        relative = os.path.relpath(file, directory)
    except ValueError:
        return file
    return file if relative.startswith("..") else relative


def decisions(sources: Sources, query: Mapping[str, str]) -> dict[str, Any]:
    filters = {key: value for key, value in query.items() if key in FILTERS and value}
    return {
        "filters": filters,
        "decisions": [dict(record) for record in sources.recent.select(filters, LIST_LIMIT)],
        "limit": LIST_LIMIT,
    }


def decision(sources: Sources, decision_id: str) -> dict[str, Any] | None:
    """One record and what the current policy set makes of its request; None if not held."""
    record = sources.recent.find(decision_id)
    if record is None:
        return None
    record = dict(record)
    policy = sources.policy()
    scenario = scenario_of(record)
    new = redecide(policy, record)
    if scenario is None or new is None:
        return {
            "record": record,
            "now": None,
            "note": "refused before any policy was read (an unreadable request, a limit, a "
            "refused peer certificate): no policy change can alter this answer",
        }
    # The token's times are judged when the request was made, the rules as they are now.
    at = record_timestamp(record) or sources.clock()
    explanation = explain_scenario(policy, scenario, at)
    change = compare(record, new)
    explained = _jsonable(asdict(explanation))
    where = sources.policy_directory
    explained["files"] = [_relative(file, where) for file in explained["files"]]
    for trace in (*explained["rules"], *explained["limits"]):
        trace["file"] = _relative(trace["file"], where)
    return {
        "record": record,
        "now": {
            "revision": policy.revision,
            "decision": "allow" if new.allowed else "deny",
            "status": new.status,
            "reason": new.reason,
            "rule": new.rule,
            "differs": change is not None,
            "change": None if change is None else {"kind": change[0], "key": change[1]},
            "explanation": explained,
        },
        "note": None,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
