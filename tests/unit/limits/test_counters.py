"""The two counters: in the process (exact) and shared through a real Redis server."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.limits import LocalCounter, counter_key, parse_key
from authz.limits.counter import OVERFLOW_BUCKETS, overflow_key
from authz.limits.keys import LimitKey
from authz.limits.shared import LOCAL, SHARED, SharedCounter
from tests.support.certs import make_pki
from tests.support.redis import RedisServer

NOW = 1_800_000_000.0  # a minute boundary: 1_800_000_000 % 60 == 0


def wait_until(condition: object, timeout: float = 10.0) -> None:
    """Poll (bounded) until `condition()` holds: for state changes made by a background thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


# -- keys ------------------------------------------------------------------------------------


def test_keys_parse_and_hash_without_the_raw_value() -> None:
    assert parse_key("header:X-Tenant") == LimitKey("header", "x-tenant")
    assert parse_key("claim:org.id") == LimitKey("claim", "org.id")
    assert parse_key("source_ip") == LimitKey("source_ip")
    for bad in ("header:", "ip", "principal:x", "claim"):
        with pytest.raises(ValueError, match="key must be one of"):
            parse_key(bad)
    secret = "sk_live_0123456789abcdef"
    key = counter_key("per-key", secret)
    assert len(key) == 16 and secret.encode() not in key
    assert counter_key("other", secret) != key


# -- in the process --------------------------------------------------------------------------


def test_local_counter_lets_exactly_limit_through_per_window() -> None:
    counter = LocalCounter()
    key = counter_key("l", "alice")
    results = [counter.take(key, 100, 60, NOW + i * 0.01) for i in range(2000)]
    assert sum(r.allowed for r in results) == 100
    assert results[99].allowed and results[99].remaining == 0
    assert not results[100].allowed
    assert results[100].reset == pytest.approx(60 - 1.0)
    # the next window starts afresh
    assert counter.take(key, 100, 60, NOW + 60).allowed


def test_local_counter_is_bounded_and_stricter_when_full() -> None:
    counter = LocalCounter(max_keys=10)
    keys = [counter_key("l", f"user{i}") for i in range(50)]
    for key in keys:
        counter.take(key, 1, 60, NOW)
    # The ten first keys, then the others in their (up to 40) overflow buckets.
    assert 10 < len(counter) <= 10 + min(40, OVERFLOW_BUCKETS)
    late = keys[10]
    assert overflow_key(late) != late
    assert not counter.take(late, 1, 60, NOW).allowed  # counted, in its bucket
    for i in range(10_000):
        counter.take(counter_key("l", f"flood{i}"), 1, 60, NOW)
    assert len(counter) <= 10 + OVERFLOW_BUCKETS
    # A new window frees the tables.
    counter.take(keys[0], 1, 60, NOW + 60)
    assert len(counter) == 1


# -- shared through Redis ----------------------------------------------------------------------


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_two_processes_sharing_redis_let_limit_through(redis: RedisServer) -> None:
    """Two counters (two replicas' worth) under a 2,000-request burst: 100 to 110 pass."""
    a, b = SharedCounter(redis.url), SharedCounter(redis.url)
    try:
        key = counter_key("cart-per-user", "alice")
        now = time.time()
        passed = 0
        for i in range(2000):
            passed += (a if i % 2 else b).take(key, 100, 60, now).allowed
        assert 100 <= passed <= 110
        assert a.state == SHARED and b.state == SHARED
    finally:
        a.close()
        b.close()


def test_redis_holds_no_raw_key(redis: RedisServer) -> None:
    counter = SharedCounter(redis.url)
    try:
        secret = "sk_live_0123456789abcdef"
        counter.take(counter_key("per-key", secret), 10, 60, time.time())
        names = [k.decode() for k in redis.client().keys("*")]
        # One hash tag per limit and identity: every window of it on one cluster slot.
        assert names and all(re.fullmatch(r"authz:rl:\{[0-9a-f]{32}\}:60:\d+", n) for n in names)
        assert not any(secret in n for n in names)
        assert all(0 < redis.client().ttl(n) <= 61 for n in names)
    finally:
        counter.close()


def test_redis_killed_and_restarted(redis: RedisServer) -> None:
    counter = SharedCounter(redis.url, probe_interval=0.05)
    try:
        key = counter_key("l", "bob")
        now = time.time()
        assert counter.take(key, 1000, 3600, now).allowed
        redis.kill()
        # Checks keep being answered (counted locally) and the state says so.
        for _ in range(200):
            assert counter.take(key, 1000, 3600, now).allowed
        wait_until(lambda: counter.state == LOCAL)
        assert counter.fallbacks == 1
        assert counter.status()["state"] == LOCAL and counter.status()["reason"]
        # Numbers are numbers, so /readyz's JSON says `"fallbacks": 1`, not `"1"` (issue 25).
        status = counter.status()
        assert status["fallbacks"] == 1 and isinstance(status["late_checks"], int)
        assert isinstance(status["round_trip_ms"], float)
        redis.start()
        wait_until(lambda: counter.state == SHARED)
        # What was let through locally is handed in to the shared counter.
        for _ in range(50):
            counter.take(key, 1000, 3600, now)
        client = redis.client()
        wait_until(lambda: sum(int(client.get(k) or 0) for k in client.keys("*")) >= 200)
        assert counter.fallbacks == 1
    finally:
        counter.close()


def test_local_fallback_still_enforces_the_limit_per_process(redis: RedisServer) -> None:
    counter = SharedCounter(redis.url, probe_interval=60)
    try:
        redis.kill()
        key = counter_key("l", "carol")
        now = time.time()
        passed = sum(counter.take(key, 10, 3600, now).allowed for _ in range(100))
        assert passed == 10
        assert counter.state == LOCAL
    finally:
        counter.close()


class _FakeServer:
    """A TCP server on loopback that answers every request with `reply` (None: never)."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                if self.reply is not None:
                    conn.sendall(self.reply)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("reply", [b"+not a number\r\n" * 8, b"garbage\x00\xff\r\n", None])
def test_garbage_or_silence_counts_locally(reply: bytes | None) -> None:
    server = _FakeServer(reply)
    counter = SharedCounter(f"redis://127.0.0.1:{server.port}/0", probe_interval=60)
    try:
        key = counter_key("l", "dave")
        now = time.time()
        results = [counter.take(key, 5, 3600, now) for _ in range(20)]
        wait_until(lambda: counter.state == LOCAL)
        results += [counter.take(key, 5, 3600, now) for _ in range(20)]
        assert sum(r.allowed for r in results) == 5
    finally:
        counter.close()
        server.close()


def test_the_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisServer(password="s3cret") as server:
        wrong = SharedCounter(server.url, probe_interval=60)
        try:
            wait_until(lambda: wrong.state == LOCAL)  # no password: refused, counted locally
            assert wrong.status()["reason"]  # why, for /readyz
        finally:
            wrong.close()
        monkeypatch.setenv("AUTHZ_RATE_LIMIT_STORE_PASSWORD", "s3cret")
        right = SharedCounter(server.url)
        try:
            assert right.take(counter_key("l", "eve"), 5, 3600, time.time()).allowed
            wait_until(lambda: bool(server.client().keys("authz:rl:*")))
            assert right.state == SHARED
        finally:
            right.close()


def test_rediss_verifies_the_server_with_the_ca_named_in_the_url(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with RedisServer(tls=pki.server) as server:
        verified = SharedCounter(f"{server.url}?ssl_ca_certs={pki.ca}")
        unverified = SharedCounter(server.url, probe_interval=60)  # the system CAs: refused
        try:
            assert verified.take(counter_key("l", "tls"), 5, 3600, time.time()).allowed
            wait_until(lambda: verified.round_trip > 0)
            assert verified.state == SHARED
            wait_until(lambda: unverified.state == LOCAL)
        finally:
            verified.close()
            unverified.close()


def test_a_counter_tampered_with_in_redis_is_a_lie(redis: RedisServer) -> None:
    """A real Redis whose counter someone set below what was handed out: INCRBY then answers
    less than was added, so nothing it says is believed (no tokens from it), and the store is
    not asked again for `distrust` seconds."""
    counter = SharedCounter(redis.url, probe_interval=0.05, distrust=60)
    try:
        key = counter_key("l", "mallory")
        now = time.time()
        assert counter.take(key, 100, 3600, now).allowed
        client = redis.client()
        (name,) = client.keys("authz:rl:{*")
        client.set(name, -1000)
        passed = sum(counter.take(key, 100, 3600, now).allowed for _ in range(300))
        wait_until(lambda: counter.state == LOCAL)
        assert counter.lies == 1 and str(counter.status()["reason"]).startswith("the store lied")
        assert passed <= 99  # never more than the limit in this process
        time.sleep(0.3)
        assert counter.state == LOCAL  # distrusted: not probed back within `distrust`
    finally:
        counter.close()


def test_a_slow_store_refuses_ahead_of_its_batch_for_a_second_only() -> None:
    """200 ms a reply: one check passes ahead of the batch (the advance), the next are refused
    with a reset of at most a second (Retry-After: 1), and the limit is never passed."""
    from tests.support.resp import LyingRedis

    with LyingRedis("slow", delay=0.2) as store:
        counter = SharedCounter(store.url)
        try:
            key, now = counter_key("l", "slow"), time.time()
            first, second = counter.take(key, 5, 3600, now), counter.take(key, 5, 3600, now)
            assert first.allowed and not second.allowed
            assert second.reset <= 1.0 and counter.late >= 2
            passed = 1
            for _ in range(60):
                passed += counter.take(key, 5, 3600, now).allowed
                time.sleep(0.02)
            assert passed <= 5 and counter.state == SHARED
        finally:
            counter.close()
