"""Counters shared by every replica and worker through Redis (or Valkey).

One Redis round trip per check would put the network on every request's path. Instead each
process *leases* tokens: a background thread asks Redis for a small batch with one `INCRBY`
(all pending batches of all keys in one pipelined round trip), and checks spend the leased
tokens locally. Redis's counter is the exact sum of every batch handed out, so the replicas
together never get more than `limit` through per window while Redis answers: a batch is cut to
what is left (`granted = limit - before`), and a key whose counter reached the limit is known
to be exhausted until its window ends. Batches shrink as the window fills (a sixteenth of what
is left, at most `batch_max`), so few tokens sit unused in one replica while another is
refused. A check that finds no token waits for its batch at most `wait` seconds (one loopback
round trip is ~0.2 ms); when the batch is late it is decided locally, from Redis's last count
plus what this process let through since (`_count_locally`), and that is handed in with the
next batch.

Nothing Redis does can break a check. When Redis is down, answers garbage, or three round trips
in a row take over `slow` seconds, every process counts locally (from Redis's last count for
the key, and never more than `limit` per process and window: the contract's "counts
locally"), logs the change once, and a PING every `probe_interval` seconds brings it back to
shared counting; what it let through meanwhile is added to the shared counters then, so other
replicas see it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from authz.limits.counter import Count, WindowTables

log = logging.getLogger("authz.limits")

PASSWORD_ENV = "AUTHZ_RATE_LIMIT_STORE_PASSWORD"
SHARED, LOCAL = "shared", "local"
_SLOW_STRIKES = 3  # round trips in a row slower than `slow`: Redis is too slow for now


class _Lease:
    """One key's state in this process for one window."""

    __slots__ = (
        "debt",
        "exhausted",
        "limit",
        "passed",
        "pending",
        "seen",
        "tokens",
        "want",
    )

    def __init__(self, limit: int, want: int) -> None:
        self.limit = limit
        self.tokens = 0  # leased, not yet spent
        self.debt = 0  # let through while counting locally, not yet added to Redis
        self.passed = 0  # let through by this process in this window, all ways
        self.exhausted = False  # Redis said the window is full
        self.seen = 0  # Redis's count at its last answer (all replicas)
        self.pending: threading.Event | None = None  # a batch is being fetched
        self.want = want  # the next batch's size


def connect(url: str) -> Any:
    """A redis-py client for `url` (redis://, rediss://, unix://) with short timeouts, so the
    background thread notices a hung server quickly. The password comes from the URL or from
    $AUTHZ_RATE_LIMIT_STORE_PASSWORD (not a flag: flags show in `ps`)."""
    import redis

    options: dict[str, Any] = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    password = os.environ.get(PASSWORD_ENV)
    if password:
        options["password"] = password
    return redis.Redis.from_url(url, **options)


class SharedCounter:
    """A `Counter` backed by Redis at `url`, safe for many threads; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        max_keys: int = 1_000_000,
        wait: float = 0.005,
        batch_max: int = 256,
        probe_interval: float = 0.5,
        slow: float = 0.05,
        client: Callable[[], Any] | None = None,
    ) -> None:
        self.url = url
        self._tables = WindowTables(max_keys)
        self._lock = threading.Lock()
        self._wait = wait
        self._batch_max = batch_max
        self._probe_interval = probe_interval
        self._connect = client or (lambda: connect(url))
        self._queue: deque[tuple[_Lease, str, int]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._strikes = 0  # round trips in a row slower than `slow`
        self._slow = slow
        self.state = SHARED
        self.reason = ""
        self.fallbacks = 0  # times this process went over to local counting (a metric)
        self.late = 0  # checks whose batch did not come within `wait` (a metric)
        self.round_trip = 0.0  # seconds, the last batch's
        self._thread = threading.Thread(target=self._run, name="authz-rate-limits", daemon=True)
        self._thread.start()

    # -- the check path --------------------------------------------------------------------

    def take(self, key: bytes, limit: int, per: int, now: float) -> Count:
        window = int(now // per)
        reset = (window + 1) * per - now
        with self._lock:
            table = self._tables.table(per, window)
            slot = self._tables.slot(table, key)
            lease = table.get(slot)
            if not isinstance(lease, _Lease):
                lease = table[slot] = _Lease(limit, self._batch(limit, limit))
            passed = self._spend(lease, slot, window, per)
            if passed is not None:
                return Count(passed, lease.tokens, reset)
            event = lease.pending or self._fetch(lease, slot, window, per)
        event.wait(self._wait)
        with self._lock:
            passed = self._spend(lease, slot, window, per)
            if passed is None:  # still no batch: this one is counted locally
                self.late += 1
                passed = self._count_locally(lease)
            return Count(passed, lease.tokens, reset)

    def _spend(self, lease: _Lease, slot: bytes, window: int, per: int) -> bool | None:
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

    def _count_locally(self, lease: _Lease) -> bool:
        """Decide without Redis: from what Redis said last (`seen`) plus what this process let
        through since, and never more than `limit` in this process."""
        if lease.passed >= lease.limit or lease.seen + lease.debt >= lease.limit:
            return False
        lease.passed += 1
        lease.debt += 1
        return True

    def _fetch(self, lease: _Lease, slot: bytes, window: int, per: int) -> threading.Event:
        event = lease.pending = threading.Event()
        # The Redis key: the window length and number make it the same in every replica.
        self._queue.append((lease, f"authz:rl:{per}:{window}:{slot.hex()}", (window + 1) * per))
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
        while not self._closed:
            if self.state != SHARED:
                self._wake.wait(self._probe_interval)
                self._wake.clear()
                client = self._probe(client)
                continue
            self._wake.wait(1.0)
            self._wake.clear()
            batch: list[tuple[_Lease, str, int, int, int]] = []
            with self._lock:
                while self._queue and len(batch) < 512:
                    lease, name, expires_at = self._queue.popleft()
                    batch.append((lease, name, expires_at, lease.want, lease.debt))
                    lease.debt = 0
            if not batch:
                continue
            try:
                if client is None:
                    client = self._connect()
                started = time.perf_counter()
                pipe = client.pipeline(transaction=False)
                for _, name, expires_at, want, debt in batch:
                    pipe.incrby(name, want + debt)
                    pipe.expireat(name, expires_at + 1)
                replies = pipe.execute()
                totals = [_integer(reply) for reply in replies[0::2]]
                self.round_trip = time.perf_counter() - started
            except Exception as error:  # redis errors, garbage, a bug: never the check's problem
                _close(client)
                client = None
                with self._lock:
                    for lease, _, _, _, debt in batch:
                        lease.debt += debt  # not counted there: hand it in later
                    self._go_local(_describe(error))
                    self._release(batch)
                continue
            with self._lock:
                self._strikes = self._strikes + 1 if self.round_trip > self._slow else 0
                for (lease, _, _, want, debt), total in zip(batch, totals, strict=True):
                    before = total - want - debt
                    granted = max(0, min(want, lease.limit - before - debt))
                    lease.seen = total
                    lease.tokens += granted
                    lease.exhausted = total >= lease.limit
                    lease.want = self._batch(lease.limit, lease.limit - total)
                self._release(batch)
                if self._strikes >= _SLOW_STRIKES:
                    self._go_local(f"round trips over {self._slow * 1000:g} ms")

    def _release(self, batch: list[tuple[_Lease, str, int, int, int]]) -> None:
        for lease, *_ in batch:
            if lease.pending is not None:
                lease.pending.set()
                lease.pending = None

    def _probe(self, client: Any) -> Any:
        """Ask Redis whether it is back (a PING answered within `wait`)."""
        try:
            if client is None:
                client = self._connect()
            started = time.perf_counter()
            if client.ping() is not True:
                raise ValueError("PING was not answered with PONG")
            elapsed = time.perf_counter() - started
        except Exception as error:
            with self._lock:
                self.reason = _describe(error)
            _close(client)
            return None
        if elapsed <= self._slow:
            with self._lock:
                self._strikes = 0
                self.state, self.reason = SHARED, ""
            if self.fallbacks:
                log.warning("rate-limit store %s answers: counting shared again", _safe(self.url))
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
            _safe(self.url),
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
            "state": self.state,
            "round_trip_ms": round(self.round_trip * 1000, 2),
            "late_checks": self.late,
            "fallbacks": self.fallbacks,
        }
        if self.state != SHARED and self.reason:
            status["reason"] = self.reason
        return status

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)

    def __len__(self) -> int:
        return len(self._tables)


def _integer(reply: object) -> int:
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    raise ValueError(f"INCRBY answered {type(reply).__name__}, not an integer")


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


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
