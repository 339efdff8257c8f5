"""The recent decisions, held in memory for the decision page (authz.observe.pages).

Each entry is the decision log's own record of a check (`decision_record`, built on the decision
log's writer thread, never on the request path), so the page shows exactly what the log would
hold, redacted the same way: no token, key or cookie value ever reaches it. The ring is bounded
by a number of entries and by the bytes of their JSON form; the oldest go first.

Beside the ring, a per-minute count of decisions by reason for the overview's chart: it covers
every decision of the last minutes, however many the ring keeps.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Decisions by reason: minutes kept, and distinct reasons per minute (rule names are the
# policy's, so bounded by it; a cap still keeps a hostile policy from growing this).
TIMELINE_MINUTES = 15
TIMELINE_REASONS = 64
OTHER_REASONS = "(other)"

# What the page can filter on: query parameter -> the record field it matches exactly.
FILTERS = {
    "id": "decision_id",
    **{name: name for name in ("host", "principal", "reason", "status")},
}


@dataclass(frozen=True, slots=True)
class Entry:
    record: Mapping[str, Any]
    size: int  # bytes of the record's JSON form


class RecentDecisions:
    """The last `entries` decision records, at most `budget` bytes of JSON in all."""

    def __init__(
        self, entries: int, budget: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.entries = entries
        self.budget = budget
        self._ring: deque[Entry] = deque()
        self._bytes = 0
        self._by_id: dict[str, Entry] = {}
        self._minutes: deque[tuple[int, Counter[str]]] = deque(maxlen=TIMELINE_MINUTES)
        self._clock = clock
        self._lock = threading.Lock()

    def add(self, record: Mapping[str, Any], size: int) -> None:
        """Keep one record whose JSON form is `size` bytes (called on the decision log's writer
        thread, which has that form at hand)."""
        reason = str(record.get("reason"))
        with self._lock:
            self._count(reason)
            if self.entries <= 0 or size > self.budget:
                return  # counted, too big to keep
            entry = Entry(record, size)
            self._ring.append(entry)
            self._bytes += size
            decision_id = record.get("decision_id")
            if isinstance(decision_id, str):
                self._by_id[decision_id] = entry
            while len(self._ring) > self.entries or self._bytes > self.budget:
                old = self._ring.popleft()
                self._bytes -= old.size
                old_id = old.record.get("decision_id")
                if isinstance(old_id, str) and self._by_id.get(old_id) is old:
                    del self._by_id[old_id]

    def _count(self, reason: str) -> None:
        minute = int(self._clock() // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, Counter()))
        counts = self._minutes[-1][1]
        if reason not in counts and len(counts) >= TIMELINE_REASONS:
            reason = OTHER_REASONS
        counts[reason] += 1

    def find(self, decision_id: str) -> Mapping[str, Any] | None:
        with self._lock:
            entry = self._by_id.get(decision_id)
        return entry.record if entry is not None else None

    def select(self, filters: Mapping[str, str], limit: int) -> list[Mapping[str, Any]]:
        """Newest first, the records whose fields equal every filter (see FILTERS)."""
        wanted = [(FILTERS[key], value) for key, value in filters.items() if key in FILTERS]
        with self._lock:
            newest_first: Iterable[Entry] = reversed(list(self._ring))
        found: list[Mapping[str, Any]] = []
        for entry in newest_first:
            if all(str(entry.record.get(field)) == value for field, value in wanted):
                found.append(entry.record)
                if len(found) >= limit:
                    break
        return found

    def timeline(self) -> list[tuple[int, dict[str, int]]]:
        """(minute start, Unix seconds; reason -> count) for each of the last minutes, oldest
        first, a minute without decisions included as empty."""
        now = int(self._clock() // 60)
        with self._lock:
            kept = {minute: dict(counts) for minute, counts in self._minutes}
        first = now - TIMELINE_MINUTES + 1
        return [(minute * 60, kept.get(minute, {})) for minute in range(first, now + 1)]

    def usage(self) -> tuple[int, int]:
        """(entries held, bytes held)."""
        with self._lock:
            return len(self._ring), self._bytes
