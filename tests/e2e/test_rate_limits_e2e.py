"""Rate limits end to end: a real Envoy in front of `authz serve` replicas that share their
counters through a real Redis server, which is killed and restarted mid-test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import EnvoyFactory
from tests.support import https
from tests.support.envoy import _authz_address
from tests.support.redis import RedisServer
from tests.support.replicas import Replica, start_replicas, wait_until, write_policy
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e


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
    write_policy(directory)
    started: list[Replica] = []

    def start(workers: int) -> list[Replica]:
        started.extend(start_replicas(directory, redis.url, workers=workers))
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
