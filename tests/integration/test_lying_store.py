"""Issue 23, item 1: a rate-limit store that lies or is slow, through the real `authz serve`.

The store is a small Redis-speaking server (tests/support/resp.py) that answers INCRBY with
-1000, never lets a counter grow, or answers every command after 200 ms. The limit is 5 per
hour: the service must let at most 5 of 40 through (the limit plus 10% rounds down to 5), say
in /readyz, the metrics and one log line that it counts locally, and never fail a check.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.replicas import Replica, start_replicas, wait_until, write_policy
from tests.support.resp import LyingRedis

LIMIT = 5


@pytest.fixture
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: unix socket paths are limited to ~100 bytes.
    directory = Path(tmp_path_factory.mktemp("lie"))
    write_policy(directory, limit=LIMIT)
    return directory


@contextmanager
def serve(directory: Path, store: LyingRedis, replicas: int = 1) -> Iterator[list[Replica]]:
    started = start_replicas(directory, store.url, replicas=replicas)
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()


def statuses(replicas: list[Replica], n: int, client: str = "alice") -> Counter[int]:
    """`n` checks of one client, round robin over the replicas."""
    return Counter(
        replicas[i % len(replicas)].check(
            replicas[i % len(replicas)].sockets[0], "/limited/cart", {"x-client": client}
        )
        for i in range(n)
    )


@pytest.mark.parametrize("counters_only", [False, True], ids=["always", "counters-only"])
@pytest.mark.parametrize("mode", ["negative", "stuck"])
def test_a_lying_store_is_not_believed(directory: Path, mode: str, counters_only: bool) -> None:
    with (
        LyingRedis(mode, counters_only=counters_only) as store,
        serve(directory, store) as (replica,),
    ):
        answers = statuses([replica], 40)
        assert set(answers) <= {200, 429}, answers  # every check answered
        assert answers[200] <= LIMIT, answers
        wait_until(lambda: replica.store_state() == "local", timeout=20)
        limits = replica.readyz()["rate_limits"]
        assert replica.readyz()["ready"] is True
        assert limits["fallbacks"] == 1, limits
        reason = limits["reason"]
        if counters_only:  # the probe was answered honestly: the counters' replies lied
            assert reason.startswith("the store lied"), limits
            assert limits["lies"] == 1, limits
        else:  # found out at start, by the probe
            assert "fresh counter" in reason, limits
        metrics = replica.admin("/metrics")
        assert 'authz_rate_limit_store_shared{store="redis"} 0.0' in metrics
        assert "authz_rate_limit_store_fallbacks_total 1.0" in metrics
        assert f"authz_rate_limit_store_lies_total {float(limits['lies'])}" in metrics
        # Another 40: still counted locally (the liar is not asked again for a while), and
        # the change was logged once.
        answers += statuses([replica], 40)
        assert answers[200] <= LIMIT, answers
        assert replica.log().count("unusable") == 1, replica.log()[-2000:]
        assert replica.store_state() == "local"


def test_a_slow_store_costs_refusals_not_looseness(directory: Path) -> None:
    """200 ms a reply: one process lets at most the limit through, two at most the limit plus
    one each ahead of their first batch (`advance`), and the store stays shared."""
    with LyingRedis("slow", delay=0.2) as store, serve(directory, store, replicas=2) as replicas:
        answers = statuses(replicas[:1], 40, client="one")
        assert set(answers) <= {200, 429} and 1 <= answers[200] <= LIMIT, answers
        answers = statuses(replicas, 40, client="two")
        assert set(answers) <= {200, 429} and 1 <= answers[200] <= LIMIT + 2, answers
        # Given time, the shared count lets the whole limit through, and no more.
        for _ in range(30):
            answers += statuses(replicas, 2, client="two")
            if answers[200] >= LIMIT:
                break
            time.sleep(0.1)
        assert LIMIT <= answers[200] <= LIMIT + 2, answers
        for replica in replicas:
            limits = replica.readyz()["rate_limits"]
            assert limits["state"] == "shared", limits
            assert limits["reason"].startswith("slow"), limits
