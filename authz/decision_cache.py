"""The decision cache: a repeated request is answered from the verdict of its first check.

The key is exactly what a check of the request's host reads (`KeyPlan`, computed per host when
the policy is compiled): host, method, normalized path, what the identity layer reads of the
peer (`IdentityResolver.cache_inputs`), the header values holding the token or an API key and
those `when` conditions name, the query string only when a credential may sit there or a rule
has a `query` condition, the route's context only when a rule has a `context` condition, the
port only when a rule names `ports`, the source IP only when one names `ip_blocks`. Two
requests with equal keys get the same verdict from the same policy set and keys, save for the
decision id and time.

So an entry is used only
* under the very policy set it was made with (a reload starts an empty cache),
* while every key set of the host's providers is the one it was made with,
* while the token's `exp` and `nbf` still hold at `now` (checked on every hit; the full check
  then answers with the reason),
and only checks whose identity resolved are kept: a refused token (expired, unknown kid, keys
not loaded yet) depends on time or on the keys to come, and its full check also asks for a
refetch. The cache holds at most `max_entries` entries and about `max_bytes` bytes of keys and
verdicts, evicting the oldest first; an entry larger than `max_entry_bytes` is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from authz.model import Request, Verdict
from authz.policy.decide.compiler import KeyPlan

Key = tuple[Hashable, ...]

# Rough per-entry bookkeeping (tuple, dataclasses, dict slot) on top of the strings we count.
_OVERHEAD_BYTES = 512


@dataclass(frozen=True, slots=True)
class Cached:
    """A verdict to repeat, and what it stays right for."""

    verdict: Verdict
    key_sets: tuple[object, ...]
    exp: float | None
    nbf: float | None
    size: int
    # The rate limits that count this request, with their counter keys (authz.limits.Plan):
    # a hit is counted again, without matching the limits again (the key names what they read).
    limits: tuple[tuple[Any, bytes], ...] = ()


def request_key(plan: KeyPlan, request: Request, peer: tuple[str, ...]) -> Key:
    """The cache key of `request` under a host whose check reads `plan`."""
    headers = request.headers
    get = headers.get
    key: list[Hashable] = [request.host, request.method, request.path, *peer]
    if plan.query:
        key.append(request.query)
    if plan.port:
        key.append(request.destination_port)
    if plan.source_ip:
        key.append(request.source_ip)
    if plan.context:
        key.append(tuple(sorted(request.context.items())))
    key.extend([get(name) for name in plan.headers])  # None (absent) differs from ""
    return tuple(key)


def entry_size(key: Key, verdict: Verdict) -> int:
    """Bytes an entry holds, approximately: its strings plus a fixed overhead."""
    # Plain loops: this runs on every miss, and generator expressions cost more than the sums.
    size = _OVERHEAD_BYTES + len(verdict.principal) + len(verdict.request_principal)
    for part in key:
        if part.__class__ is str:
            size += len(part)
    for name, value in verdict.headers_to_set:
        size += len(name) + len(value)
    for name in verdict.headers_to_remove:
        size += len(name)
    return size


class DecisionCache:
    """Bounded, thread-safe; lookups take no lock (one dict read), inserts do."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_entry_bytes: int = 96 * 1024,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        # The policy set the entries were made with, and the entries: replaced together in
        # one assignment, so a reader never pairs one set's label with another's entries.
        self._state: tuple[object, OrderedDict[Key, Cached]] = (None, OrderedDict())
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # for tests and metrics; approximate under threads

    def get(self, policy_set: object, key: Key) -> Cached | None:
        """The entry for `key` made under `policy_set`, if any (validity is the caller's)."""
        owner, entries = self._state
        if owner is not policy_set:
            return None
        return entries.get(key)

    def put(self, policy_set: object, key: Key, entry: Cached) -> None:
        """Keep `entry`, evicting the oldest entries beyond the bounds. An entry made under
        another set than the cache holds starts the cache over for that set."""
        if entry.size > self.max_entry_bytes or self.max_entries <= 0:
            return
        with self._lock:
            owner, entries = self._state
            if owner is not policy_set:
                entries = OrderedDict()
                self._state = (policy_set, entries)
                self._bytes = 0
            old = entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            while entries and (
                len(entries) >= self.max_entries or self._bytes + entry.size > self.max_bytes
            ):
                _, evicted = entries.popitem(last=False)
                self._bytes -= evicted.size
            if entry.size <= self.max_bytes:
                entries[key] = entry
                self._bytes += entry.size

    def drop(self, policy_set: object, key: Key) -> None:
        """Forget one entry (it no longer holds: other keys, or its token expired)."""
        with self._lock:
            owner, entries = self._state
            if owner is policy_set:
                old = entries.pop(key, None)
                if old is not None:
                    self._bytes -= old.size

    def __len__(self) -> int:
        return len(self._state[1])

    @property
    def bytes(self) -> int:
        return self._bytes
