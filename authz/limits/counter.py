"""The counting interface of the limiter, and the in-process implementation.

Windows are fixed and aligned on the epoch (`window = floor(now / per)`), so every replica
agrees on where a window starts without talking to the others, and a counter is one integer.
Over one window a key gets at most `limit` requests through (the contract of docs/policy.md);
like every fixed window it may see up to twice that across a window boundary.
"""

from __future__ import annotations

import threading
from typing import NamedTuple, Protocol

# When the tables are full, keys not yet counted share one of this many overflow counters:
# stricter for them (their requests add up), never looser, and no more memory.
OVERFLOW_BUCKETS = 4096


class Count(NamedTuple):
    """One request counted: whether it may pass, what is left of the window for its key, and
    the seconds until the window ends. (A NamedTuple: made on every counted check, and a
    frozen dataclass costs several times more to build.)"""

    allowed: bool
    remaining: int
    reset: float


class Counter(Protocol):
    """Counts requests per key and window. `take` never waits more than a few milliseconds and
    never raises for a store that misbehaves (it counts locally instead)."""

    def take(self, key: bytes, limit: int, per: int, now: float) -> Count:
        """Count one request for `key` (a `counter_key`) under `limit` per `per` seconds."""
        ...

    def status(self) -> dict[str, str | float]:
        """For /readyz and logs: {"store": "memory" | "redis", "state": ...}; numbers as
        numbers (JSON numbers in /readyz)."""
        ...

    def close(self) -> None: ...


class WindowTables:
    """Per-key state of the current window of each `per`, bounded to `max_keys` keys in all.

    One dict per window length: when its window ends the whole dict is dropped (no sweeping,
    no per-entry expiry). A key first seen while the tables are full is mapped to one of
    OVERFLOW_BUCKETS shared keys, so there are never more than max_keys + OVERFLOW_BUCKETS.
    """

    __slots__ = ("_size", "_tables", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._tables: dict[int, tuple[int, dict[bytes, object]]] = {}
        self._size = 0

    def table(self, per: int, window: int) -> dict[bytes, object]:
        """The dict of the current window of `per` (a new one when the window moved on)."""
        found = self._tables.get(per)
        if found is not None and found[0] == window:
            return found[1]
        return self._next(per, window, found)

    def _next(
        self, per: int, window: int, found: tuple[int, dict[bytes, object]] | None
    ) -> dict[bytes, object]:
        if found is not None:
            self._size -= len(found[1])
        fresh: dict[bytes, object] = {}
        self._tables[per] = (window, fresh)
        return fresh

    def slot(self, table: dict[bytes, object], key: bytes) -> bytes:
        """`key`, or its overflow bucket when `key` is new and the tables are full."""
        if key in table:
            return key
        if self._size >= self.max_keys:
            key = overflow_key(key)
            if key in table:
                return key
        self._size += 1  # overflow buckets count too: at most max_keys + OVERFLOW_BUCKETS
        return key

    def __len__(self) -> int:
        return self._size


def overflow_key(key: bytes) -> bytes:
    """The shared bucket of `key` (exposed for tests)."""
    return b"\xff" + (int.from_bytes(key[:4], "big") % OVERFLOW_BUCKETS).to_bytes(2, "big")


class LocalCounter:
    """Counts in this process: exactly `limit` per window on one replica (one process).

    Memory: at most `max_keys` keys (plus OVERFLOW_BUCKETS), each a 16-byte key and an int in a
    dict, about 150 bytes (docs/operations.md has the measurement)."""

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self._tables = WindowTables(max_keys)
        self._lock = threading.Lock()  # for a thread-pool server; uncontended under asyncio

    def take(self, key: bytes, limit: int, per: int, now: float) -> Count:
        window = int(now // per)
        tables = self._tables
        with self._lock:
            table = tables.table(per, window)
            count = table.get(key)
            slot = key
            if count is None:  # a new key: it may have to share an overflow counter
                slot = tables.slot(table, key)
                count = table.get(slot, 0)
            assert isinstance(count, int)
            count += 1
            if count <= limit + 1:  # counting further changes nothing: keep the int small
                table[slot] = count
        return Count(
            count <= limit, limit - count if count < limit else 0, (window + 1) * per - now
        )

    def status(self) -> dict[str, str | float]:
        return {"store": "memory", "state": "local"}

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._tables)
