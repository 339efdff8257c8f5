"""The one cache shape identity uses: LRU, bounded by entries *and* by bytes, thread-safe.

Every cache here is keyed by something a client sends (a token, a principal, a certificate, an
XFCC header), so a count of entries alone does not bound memory: 4096 principals of 4 MiB each
are 16 GiB (issue 10.2). Each entry is therefore weighed by an estimate of its bytes (the caller
gives it: key plus value), an entry over `max_entry` bytes is never stored (computing it again
is the price of an oversized input), and the total weight stays within `budget` bytes.

Both bounds ride on one cachetools cache (`getsizeof=`): an entry weighs at least
`budget // entries`, so no more than `entries` fit.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import Cache, LRUCache, TLRUCache

__all__ = ["BoundedCache", "Entry", "deep_bytes", "text_bytes"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What an entry costs beyond its key and value: the cache's own links and the boxes around it.
ENTRY_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """A cached value and the bytes it was weighed at."""

    value: V
    size: int


class BoundedCache(Generic[K, V]):
    """LRU cache of at most `entries` entries and `budget` bytes; an entry over `max_entry`
    bytes is not stored. With `ttu(key, value, now) -> expiry`, entries also expire (TLRU,
    `timer` is the clock `now` comes from)."""

    def __init__(
        self,
        *,
        entries: int,
        budget: int,
        max_entry: int,
        ttu: Callable[[K, V, float], float] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if entries < 1 or budget < 1:
            raise ValueError("a cache needs room for at least one entry and one byte")
        self.budget = budget
        self.max_entry = min(max_entry, budget)
        floor = max(1, budget // entries)

        def weight(entry: Entry[V]) -> int:
            return max(entry.size, floor)

        self._cache: Cache[K, Entry[V]]
        if ttu is None:
            self._cache = LRUCache(maxsize=budget, getsizeof=weight)
        else:
            user_ttu = ttu

            def entry_ttu(key: K, entry: Entry[V], now: float) -> float:
                return user_ttu(key, entry.value, now)

            self._cache = TLRUCache(maxsize=budget, ttu=entry_ttu, timer=timer, getsizeof=weight)
        self._lock = threading.Lock()

    def get(self, key: K) -> Entry[V] | None:
        """The entry for `key` (its `value` may be None), or None on a miss."""
        with self._lock:
            return self._cache.get(key)

    def put(self, key: K, value: V, size: int) -> bool:
        """Store `value` weighed at `size` bytes (key included); False when it is too large
        to be cached at all."""
        size += ENTRY_OVERHEAD
        if size > self.max_entry:
            return False
        with self._lock:
            self._cache[key] = Entry(value, size)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    @property
    def bytes(self) -> int:
        """The total weight of the entries now (at most `budget`)."""
        with self._lock:
            return int(self._cache.currsize)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def text_bytes(text: str) -> int:
    """The memory of a str (CPython: header plus 1, 2 or 4 bytes per character)."""
    return sys.getsizeof(text)


def deep_bytes(value: object, limit: int) -> int:
    """The memory of a value made of dicts, lists, tuples, strings and numbers (decoded JSON,
    parsed headers), counted until it passes `limit` (then `limit + 1`: the caller only needs
    to know it is too large)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += sys.getsizeof(item)
        if total > limit:
            return limit + 1
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total
