"""The decision page's ring: bounded by entries and by bytes, found by id, counted by minute."""

from __future__ import annotations

import json
from typing import Any

from authz.observe.recent import OTHER_REASONS, TIMELINE_MINUTES, TIMELINE_REASONS, RecentDecisions


def record(i: int, reason: str = "r", **extra: Any) -> dict[str, Any]:
    return {"decision_id": f"id-{i}", "reason": reason, "status": 403, "host": "h", **extra}


def size(rec: dict[str, Any]) -> int:
    return len(json.dumps(rec, separators=(",", ":")))


def keep(ring: RecentDecisions, rec: dict[str, Any]) -> None:
    """As the decision log's writer does: the record and the size of its JSON line."""
    ring.add(rec, size(rec))


def test_entries_bound_drops_the_oldest_and_forgets_their_ids() -> None:
    ring = RecentDecisions(3, 1 << 20)
    for i in range(5):
        keep(ring, record(i))
    assert ring.usage()[0] == 3
    assert ring.find("id-1") is None and ring.find("id-4") == record(4)
    assert [r["decision_id"] for r in ring.select({}, 10)] == ["id-4", "id-3", "id-2"]


def test_bytes_bound_holds_and_an_oversized_record_is_only_counted() -> None:
    one = size(record(0))
    ring = RecentDecisions(100, 3 * one)
    for i in range(6):
        keep(ring, record(i))
    held, held_bytes = ring.usage()
    assert held == 3 and held_bytes <= 3 * one
    huge = record(99, note="x" * (4 * one))
    keep(ring, huge)
    assert ring.find("id-99") is None and ring.usage()[0] == 3
    assert sum(sum(c.values()) for _, c in ring.timeline()) == 7


def test_filters_match_fields_exactly_and_ignore_unknown_keys() -> None:
    ring = RecentDecisions(10, 1 << 20)
    keep(ring, record(1, "no-admin", principal="spiffe://a"))
    keep(ring, record(2, "public", status=200))
    assert [r["decision_id"] for r in ring.select({"reason": "no-admin"}, 10)] == ["id-1"]
    assert [r["decision_id"] for r in ring.select({"status": "200"}, 10)] == ["id-2"]
    assert ring.select({"principal": "spiffe://"}, 10) == []  # exact, not a prefix
    assert len(ring.select({"nonsense": "x"}, 10)) == 2
    assert len(ring.select({}, 1)) == 1


def test_timeline_keeps_the_last_minutes_and_caps_reasons() -> None:
    now = [6000.0]
    ring = RecentDecisions(10, 1 << 20, clock=lambda: now[0])
    for i in range(TIMELINE_REASONS + 5):
        keep(ring, record(i, f"reason-{i}"))
    minutes = ring.timeline()
    assert len(minutes) == TIMELINE_MINUTES
    last = minutes[-1][1]
    assert len(last) == TIMELINE_REASONS + 1 and last[OTHER_REASONS] == 5
    now[0] += 60 * (TIMELINE_MINUTES + 1)
    keep(ring, record(1000, "later"))
    assert [counts for _, counts in ring.timeline() if counts] == [{"later": 1}]


def test_a_record_with_no_id_is_held_but_not_findable() -> None:
    ring = RecentDecisions(10, 1 << 20)
    ring.add({"reason": "request_too_large"}, 30)
    assert ring.usage()[0] == 1
    assert ring.select({"reason": "request_too_large"}, 5) == [{"reason": "request_too_large"}]
