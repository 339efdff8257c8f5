"""Counters shared by every replica and worker through Redis (or Valkey): one server, a Redis
Cluster or a Sentinel-managed master (`authz.limits.stores` reads the URL and makes the client).

One Redis round trip per check would put the network on every request's path. Instead each
process *leases* tokens: a background thread asks Redis for a small batch with one `INCRBY`
(all pending batches of all keys in one pipelined round trip; in a cluster one pipeline per
node, and a key's counters of every window share one slot through a hash tag), and checks
spend the leased tokens locally. Redis's counter is the exact sum of every batch handed out, so
the replicas together never get more than `limit` through per window while Redis answers: a
batch is cut to what is left (`granted = limit - before`, less what this process let through
meanwhile), and a key whose counter reached the limit is known to be exhausted until its window
ends. Batches shrink as the window fills (a sixteenth of what is left, at most `batch_max`), so
few tokens sit unused in one process while another is refused.

A check that finds no token waits for its batch at most `wait` seconds (one loopback round trip
is ~0.2 ms). When the batch is late the check may still pass *ahead* of it, at most
`advance(limit)` times per key, process and window (a hundredth of the limit, at least one);
past that it is refused until the batch comes. So a slow store (200 ms a reply, say) costs
refusals, never looseness: N processes let at most `limit + N * advance(limit)` through.

Every reply is checked before it is believed (`implausible`): INCRBY answers an integer in range, at
least what was added, and on one connection a counter never shrinks; EXPIREAT answers 1. A store
that breaks one of these is treated as down, and not asked again for `distrust` seconds.

When Redis is down, unreachable, lying, or a cluster answers MOVED/ASK/CLUSTERDOWN that
redis-py cannot follow, every process counts locally (from Redis's last count for the key, and
never more than `limit` per process and window: the contract's "counts locally"), logs the
change once, and a probe every `probe_interval` seconds (a fresh key incremented twice and
checked; in a cluster every master answering PING) brings it back to shared counting; what it
let through meanwhile is added to the shared counters then, so other replicas see it. The same
probe runs after a second without rounds, so a store that died while no check needed it (every
key exhausted, no traffic) shows in /readyz and the metrics all the same.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from authz.limits.counter import Count, WindowTables
from authz.limits.stores import connect, is_cluster, parse, safe

log = logging.getLogger("authz.limits")

SHARED, LOCAL = "shared", "local"
MAX_COUNT = 2**53  # a counter past this is no count Redis could have reached: a lie


def advance(limit: int) -> int:
    """Checks of one key a process may let through ahead of a late batch, per window."""
    return max(1, limit // 100)


class Lease:
    """One key's state in this process for one window."""

    __slots__ = (
        "ahead",
        "debt",
        "exhausted",
        "limit",
        "passed",
        "pending",
        "seen",
        "session",
        "tokens",
        "want",
    )

    def __init__(self, limit: int, want: int) -> None:
        self.limit = limit
        self.tokens = 0  # leased, not yet spent
        self.debt = 0  # let through without a token, not yet added to Redis
        self.passed = 0  # let through by this process in this window, all ways
        self.ahead = 0  # let through ahead of a late batch (at most `advance(limit)`)
        self.exhausted = False  # Redis said the window is full
        self.seen = 0  # Redis's count at its last answer (all replicas)
        self.session = 0  # the connection `seen` came from (a counter only grows on one)
        self.pending: threading.Event | None = None  # a batch is being fetched
        self.want = want  # the next batch's size


# One lease's part of a round: the lease, its Redis key, when the key expires, the batch asked
# and the debt handed in.
Entry = tuple[Lease, str, int, int, int]


class SharedCounter:
    """A `Counter` backed by the Redis store at `url`, safe for many threads; see the module
    docstring."""

    def __init__(
        self,
        url: str,
        *,
        max_keys: int = 1_000_000,
        wait: float = 0.005,
        batch_max: int = 256,
        probe_interval: float = 0.5,
        slow: float = 0.05,
        distrust: float = 30.0,
        start_timeout: float = 2.0,
        client: Callable[[], Any] | None = None,
    ) -> None:
        self.url = url
        self.store = parse(url)
        self._tables = WindowTables(max_keys)
        self._lock = threading.Lock()
        self._wait = wait
        self._batch_max = batch_max
        self._probe_interval = probe_interval
        # While shared and idle, a probe this often keeps /readyz and the metrics true even
        # when no check needs the store (every key exhausted, say).
        self._idle_probe = max(probe_interval, 1.0)
        self._distrust = distrust
        self._connect = client or (lambda: connect(self.store))
        self._queue: deque[tuple[Lease, str, int]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._slow = slow
        self._session = 0  # a new number for every new client
        self._trust_at = 0.0  # monotonic time before which a lying store is not probed
        self.state = SHARED
        self.reason = ""
        self.fallbacks = 0  # times this process went over to local counting (a metric)
        self.late = 0  # checks whose batch did not come within `wait` (a metric)
        self.lies = 0  # rounds whose replies broke the checks (a metric)
        self.round_trip = 0.0  # seconds, the last batch's
        self._started = threading.Event()  # the first probe answered or failed
        self._thread = threading.Thread(target=self._run, name="authz-rate-limits", daemon=True)
        self._thread.start()
        # Checks before the store is reached would all be late: wait for it (bounded: a store
        # that does not answer is found out by the client's timeouts, and counted locally).
        self._started.wait(start_timeout)

    # -- the check path --------------------------------------------------------------------

    def take(self, key: bytes, limit: int, per: int, now: float) -> Count:
        window = int(now // per)
        reset = (window + 1) * per - now
        with self._lock:
            table = self._tables.table(per, window)
            slot = self._tables.slot(table, key)
            lease = table.get(slot)
            if not isinstance(lease, Lease):
                lease = table[slot] = Lease(limit, self._batch(limit, limit))
            passed = self._spend(lease, slot, window, per)
            if passed is not None:
                return Count(passed, lease.tokens, reset)
            event = lease.pending or self._fetch(lease, slot, window, per)
        event.wait(self._wait)
        with self._lock:
            passed = self._spend(lease, slot, window, per)
            if passed is None:  # still no batch: let it pass ahead of it, within the advance
                self.late += 1
                passed = lease.ahead < advance(limit) and self._count_locally(lease)
                lease.ahead += passed
                if not passed and not lease.exhausted:
                    # Refused only until the batch comes: "retry in a second", not at the
                    # window's end.
                    return Count(False, 0, min(reset, 1.0))
            return Count(passed, lease.tokens, reset)

    def _spend(self, lease: Lease, slot: bytes, window: int, per: int) -> bool | None:
        """Under the lock: True/False when the request can be decided now, None when it must
        wait for a batch."""
        if lease.tokens > 0:
            lease.tokens -= 1
            lease.passed += 1
            if (
                lease.tokens * 2 <= lease.want
                and not lease.exhausted
                and lease.pending is None
                and self.state == SHARED
            ):
                self._fetch(lease, slot, window, per)  # the next batch, before it is needed
            return True
        if lease.exhausted:
            return False
        if self.state != SHARED:
            return self._count_locally(lease)
        if lease.debt and lease.pending is None:
            self._fetch(lease, slot, window, per)  # back to shared: hand in the debt
        return None

    def _count_locally(self, lease: Lease) -> bool:
        """Decide without Redis: from what Redis said last (`seen`) plus what this process let
        through since, and never more than `limit` in this process."""
        if lease.passed >= lease.limit or lease.seen + lease.debt >= lease.limit:
            return False
        lease.passed += 1
        lease.debt += 1
        return True

    def _fetch(self, lease: Lease, slot: bytes, window: int, per: int) -> threading.Event:
        event = lease.pending = threading.Event()
        # The Redis key: the same in every replica; the hash tag puts every window of one limit
        # and identity on one cluster slot.
        name = f"authz:rl:{{{slot.hex()}}}:{per}:{window}"
        self._queue.append((lease, name, (window + 1) * per))
        self._wake.set()
        return event

    def _batch(self, limit: int, left: int) -> int:
        return max(1, min(self._batch_max, left // 16, limit))

    # -- the background thread -------------------------------------------------------------

    def _run(self) -> None:
        client: Any = self._probe(None)  # connect before the first check needs it
        if client is None:
            with self._lock:
                self._go_local(self.reason)
        self._started.set()
        while not self._closed:
            if self.state != SHARED:
                self._wake.wait(self._probe_interval)
                self._wake.clear()
                if time.monotonic() >= self._trust_at:
                    client = self._probe(client)
                continue
            busy = self._wake.wait(self._idle_probe)
            self._wake.clear()
            with self._lock:
                batch = self._drain()
            if batch:
                client = self._round(client, batch)
            elif not busy:  # nothing to count for a while: is the store still there?
                client = self._probe(client)
                if client is None:
                    with self._lock:
                        self._go_local(self.reason)

    def _drain(self) -> list[Entry]:
        batch: list[Entry] = []
        while self._queue and len(batch) < 512:
            lease, name, expires_at = self._queue.popleft()
            batch.append((lease, name, expires_at, lease.want, lease.debt))
            lease.debt = 0
        return batch

    def _round(self, client: Any, batch: list[Entry]) -> Any:
        """One lease round: every batch and debt in one pipeline; the client to use next."""
        try:
            if client is None:
                client = self._new_client()
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for _, name, expires_at, want, debt in batch:
                pipe.incrby(name, want + debt)
                pipe.expireat(name, expires_at + 1)
            replies = pipe.execute()
            elapsed = time.perf_counter() - started
        except Exception as error:  # redis errors, garbage, a bug: never the check's problem
            self._fail(batch, _describe(error))
            return _close(client)
        with self._lock:
            self.round_trip = elapsed
            lie = implausible(batch, replies, self._session)
            if lie is not None:
                self.lies += 1
                self._trust_at = time.monotonic() + self._distrust
        if lie is not None:
            self._fail(batch, f"the store lied: {lie}")
            return _close(client)
        with self._lock:
            for (lease, _, _, want, debt), total in zip(batch, replies[0::2], strict=True):
                before = total - want - debt
                # Cut to what is left, less what this process let through since it asked, and
                # never past `limit` in this process whatever the store forgot (a restart).
                left = lease.limit - before - debt - lease.debt
                mine = lease.limit - lease.passed - lease.tokens
                lease.tokens += max(0, min(want, left, mine))
                lease.seen, lease.session = total, self._session
                lease.exhausted = total >= lease.limit
                lease.want = self._batch(lease.limit, lease.limit - total)
            self._release(batch)
        return client

    def _fail(self, batch: list[Entry], reason: str) -> None:
        with self._lock:
            for lease, _, _, _, debt in batch:
                lease.debt += debt  # maybe not counted there: hand it in later (stricter)
            self._go_local(reason)
            self._release(batch)

    def _new_client(self) -> Any:
        client = self._connect()
        self._session += 1
        return client

    def _release(self, batch: Sequence[Entry]) -> None:
        for lease, *_ in batch:
            if lease.pending is not None:
                lease.pending.set()
                lease.pending = None

    def _probe(self, client: Any) -> Any:
        """Is the store back? A fresh key incremented twice must read 1 then 3;
        in a cluster every master must answer PING too (slow is no reason to stay local: late
        checks are bounded by the advance). The client, or None."""
        try:
            if client is None:
                client = self._new_client()
            name = f"authz:rl:probe:{os.getpid()}:{secrets.token_hex(4)}"
            pipe = client.pipeline(transaction=False)
            pipe.incrby(name, 1)
            pipe.incrby(name, 2)
            pipe.delete(name)
            replies = pipe.execute()
            if replies != [1, 3, 1] or any(isinstance(r, bool) for r in replies):
                raise ValueError(f"a fresh counter incremented by 1 then 2 read {replies!r:.80}")
            if is_cluster(client) and not client.ping(target_nodes=client.PRIMARIES):
                raise ValueError("a cluster master did not answer PING")
        except Exception as error:
            with self._lock:
                self.reason = _describe(error)
            return _close(client)
        with self._lock:
            back = self.state != SHARED
            self.state, self.reason = SHARED, ""
        if back:
            log.warning("rate-limit store %s answers: counting shared again", safe(self.url))
        return client

    def _go_local(self, reason: str) -> None:
        """Under the lock: count locally from now on, once per transition."""
        self.reason = reason
        if self.state == LOCAL:
            return
        self.state = LOCAL
        self.fallbacks += 1
        log.warning(
            "rate-limit store %s unusable (%s): each process counts locally until it answers",
            safe(self.url),
            reason,
        )
        # Every waiting check decides now, locally.
        while self._queue:
            lease, _, _ = self._queue.popleft()
            if lease.pending is not None:
                lease.pending.set()
                lease.pending = None
        self._wake.set()

    # -- the rest --------------------------------------------------------------------------

    def status(self) -> dict[str, str | float]:
        status: dict[str, str | float] = {
            "store": "redis",
            "mode": self.store.mode,
            "state": self.state,
            "round_trip_ms": round(self.round_trip * 1000, 2),
            "late_checks": self.late,
            "fallbacks": self.fallbacks,
            "lies": self.lies,
        }
        if self.state != SHARED and self.reason:
            status["reason"] = self.reason
        elif self.round_trip > self._slow:
            status["reason"] = f"slow: the last round trip took {self.round_trip * 1000:.0f} ms"
        return status

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)

    def __len__(self) -> int:
        return len(self._tables)


def implausible(batch: Sequence[Entry], replies: Sequence[object], session: int) -> str | None:
    """What is wrong with a round's replies, or None when every one can be believed."""
    if len(replies) != 2 * len(batch):
        return f"{len(replies)} replies to {2 * len(batch)} commands"
    for (lease, name, _, want, debt), total, expired in zip(
        batch, replies[0::2], replies[1::2], strict=True
    ):
        added = want + debt
        if not isinstance(total, int) or isinstance(total, bool):
            return f"INCRBY {name} answered {type(total).__name__}, not an integer"
        if not added <= total <= MAX_COUNT:
            return f"INCRBY {name} {added} answered {total}"
        if lease.session == session and total < lease.seen + added:
            return f"{name} went from {lease.seen} to {total} when {added} was added"
        if expired is not True:
            return f"EXPIREAT {name} answered {expired!r:.40}, not 1"
    return None


def _close(client: Any) -> None:
    try:
        if client is not None:
            client.close()
    except Exception:
        pass
    return None


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
