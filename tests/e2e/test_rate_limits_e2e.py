"""Rate limits end to end: a real Envoy in front of `authz serve` replicas that share their
counters through a real Redis server, which is killed and restarted mid-test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import EnvoyFactory
from tests.support import https
from tests.support.envoy import _authz_address
from tests.support.ports import LOOPBACK, free_port
from tests.support.redis import RedisServer
from tests.support.service import is_serving, spawn_serve
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e


# Per hour, so a 2,000-request burst never straddles a window (fixed windows start afresh).
POLICY = """\
rules:
  - name: open
    action: allow
    to: [{paths: ["/{**}"]}]
rate_limits:
  - name: per-client
    to: [{paths: ["/limited/{**}"]}]
    key: header:x-client
    limit: 100
    per: hour
"""


class Replica:
    """`authz serve --workers N` on unix sockets (no port races), sharing `store`."""

    def __init__(self, directory: Path, name: str, workers: int, store: str) -> None:
        self.sockets = [
            f"unix:{directory / name}.sock" if i == 0 else f"unix:{directory / name}.{i}.sock"
            for i in range(workers)
        ]
        self.admin_port = free_port()
        self.process = spawn_serve(
            directory / "policies",
            "--listen",
            self.sockets[0],
            "--admin",
            f"{LOOPBACK}:{self.admin_port}",
            "--workers",
            str(workers),
            "--rate-limit-store",
            store,
            "--no-watch",
            stdout=subprocess.DEVNULL,
            stderr=(directory / f"{name}.log").open("wb"),
            start_new_session=True,
        )

    def serving(self) -> bool:
        return all(is_serving(address) for address in self.sockets)

    def readyz(self) -> dict[str, object]:
        """Worker 0's /readyz (it is ready whatever the store does)."""
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin_port}/readyz", timeout=5) as r:
            assert r.status == 200
            answer: dict[str, object] = json.loads(r.read())
            return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not reached in {timeout:g}s{why}")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
) -> Iterator[Callable[[int], list[Replica]]]:
    # A short directory: unix socket paths are limited to ~100 bytes.
    directory = Path(tmp_path_factory.mktemp("rl"))
    (directory / "policies").mkdir()
    (directory / "policies" / "limits.yaml").write_text(POLICY)
    started: list[Replica] = []

    def start(workers: int) -> list[Replica]:
        for name in ("a", "b"):
            started.append(Replica(directory, name, workers, redis.url))
        # Generous: eight Python processes start at once on a shared two-core machine.
        try:
            wait_until(lambda: all(r.serving() for r in started), timeout=240)
        except AssertionError as error:
            logs = "".join(
                f"\n{p.name}: {p.read_text(errors='replace')[-2000:]}"
                for p in directory.glob("*.log")
            )
            raise AssertionError(f"{error}: the replicas' logs:{logs}") from None
        return started

    try:
        yield start
    finally:
        for replica in started:
            replica.stop()


def envoy_for(envoy_factory: EnvoyFactory, replicas: list[Replica]) -> str:
    """An Envoy whose ext_authz cluster balances requests over every worker of every replica."""
    endpoints = [{"endpoint": {"address": _authz_address(s)}} for r in replicas for s in r.sockets]
    cluster = {
        "name": "authz_replicas",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": "authz_replicas",
            "endpoints": [{"lb_endpoints": endpoints}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    envoy = envoy_factory(
        replicas[0].sockets[0],
        extra_clusters=[cluster],
        ext_authz_overrides={
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz_replicas"}, "timeout": "2s"}
        },
    )
    return envoy.url


def burst(url: str, client: str, n: int) -> list[https.Response]:
    def one(_: int) -> https.Response:
        return https.request(url, "/limited/cart", headers={"x-client": client})

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(n)))


def test_two_replicas_with_four_workers_share_one_limit_through_envoy(
    replicas: Callable[[int], list[Replica]],
    envoy_factory: EnvoyFactory,
    upstream: EchoUpstream,
) -> None:
    url = envoy_for(envoy_factory, replicas(4))
    answers = burst(url, "alice", 2000)
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {200, 429}, statuses
    assert 100 <= statuses[200] <= 110, statuses
    limited = next(a for a in answers if a.status == 429)
    assert limited.json()["error"] == "too_many_requests"
    assert 0 < int(limited.header("retry-after") or 0) <= 3600
    assert limited.header("ratelimit-policy") == '"per-client";q=100;w=3600'
    assert limited.header(
        "ratelimit",
    ).startswith('"per-client";r=0;t=')  # type: ignore[union-attr]
    # Another key has its own counter; a path no limit matches is never limited.
    assert https.request(url, "/limited/cart", headers={"x-client": "bob"}).status == 200
    assert https.request(url, "/open", headers={"x-client": "alice"}).status == 200
    assert https.request(url, "/limited/cart").status == 200  # no key: not counted


def test_redis_killed_and_restarted_mid_traffic(
    replicas: Callable[[int], list[Replica]],
    envoy_factory: EnvoyFactory,
    upstream: EchoUpstream,
    redis: RedisServer,
) -> None:
    started = replicas(1)
    url = envoy_for(envoy_factory, started)
    assert Counter(a.status for a in burst(url, "carol", 40)) == {200: 40}
    assert all(r.readyz()["rate_limits"]["state"] == "shared" for r in started)  # type: ignore[index]

    redis.kill()
    # Every check is still answered (no 5xx): each replica counts locally.
    assert Counter(a.status for a in burst(url, "carol", 40)) == {200: 40}
    wait_until(lambda: all(r.readyz()["rate_limits"]["state"] == "local" for r in started))  # type: ignore[index]
    # Still ready: a store that is down never takes the service out.
    assert all(r.readyz()["ready"] is True for r in started)
    # Locally each replica still lets at most the limit through (100 each, 80 passed already
    # across both): the key is never unlimited.
    statuses = Counter(a.status for a in burst(url, "carol", 400))
    assert set(statuses) <= {200, 429} and statuses[429] > 0, statuses

    redis.start()
    wait_until(lambda: all(r.readyz()["rate_limits"]["state"] == "shared" for r in started))
    statuses = Counter(a.status for a in burst(url, "dave", 150))
    assert 100 <= statuses[200] <= 110, statuses
