"""`--rate-limit-store` URLs: one server, a Redis Cluster, Sentinel."""

from __future__ import annotations

import pytest

from authz.limits.shared import MAX_COUNT, Lease, implausible
from authz.limits.stores import CLUSTER, SENTINEL, SINGLE, parse, safe


def test_single_server_urls_are_left_to_redis_py() -> None:
    for url in ("redis://r:6379/0", "rediss://r:6380/2?ssl_ca_certs=/ca.pem", "unix:///r.sock"):
        assert parse(url).mode == SINGLE


def test_cluster_urls() -> None:
    store = parse("redis+cluster://a:7000,b:7001,[::1]:7002,c")
    assert store.mode == CLUSTER and not store.tls
    assert store.nodes == (("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379))
    tls = parse("rediss+cluster://u:p%40ss@a:7000/?ssl_ca_certs=/etc/ca.pem")
    assert tls.tls and tls.username == "u" and tls.password == "p@ss"
    assert tls.options == (("ssl_ca_certs", "/etc/ca.pem"),)


def test_sentinel_urls() -> None:
    store = parse("redis+sentinel://s1:26379,s2/authz/3")
    assert store.mode == SENTINEL and store.master == "authz" and store.db == 3
    assert store.nodes == (("s1", 26379), ("s2", 26379))
    assert parse("rediss+sentinel://s1:26379/m").tls


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "name the master"),
        ("redis+sentinel://s1/m/x", "not a number"),
        ("redis+cluster://a:7000/0", "no database"),
        ("redis+cluster://a:99999", "port"),
        ("redis+cluster://:7000", "no host"),
        ("redis+cluster://a:7000?ssl_ca_certs=/ca.pem", "rediss+"),
        ("rediss+cluster://a:7000?verify=no", "unknown option"),
        ("redis+shard://a:7000", "use memory"),
        ("http://a", "use memory"),
        ("unix://", "needs a path"),
    ],
)
def test_bad_urls_say_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(url)


def test_logs_never_show_the_password() -> None:
    assert safe("redis+sentinel://u:pw@s1:1,s2:2/m") == "redis+sentinel://***@s1:1,s2:2/m"


def _round(seen: int = 0, session: int = 1, want: int = 6, debt: int = 0) -> list[object]:
    lease = Lease(100, want)
    lease.seen, lease.session = seen, session
    return [(lease, "authz:rl:{k}:60:1", 60, want, debt)]


@pytest.mark.parametrize(
    ("batch", "replies", "lie"),
    [
        (_round(), [6, True], None),  # the first batch of a window
        (_round(seen=6), [12, True], None),  # grown by exactly what was added
        (_round(seen=6, debt=3), [60, True], None),  # others counted too
        (_round(seen=50, session=0), [6, True], None),  # seen on an older connection
        (_round(), [-1000, True], "answered -1000"),
        (_round(), [5, True], "answered 5"),  # less than was added
        (_round(seen=6), [6, True], "went from 6 to 6"),  # a counter that never grows
        (_round(), [MAX_COUNT + 1, True], "answered"),
        (_round(), [True, True], "not an integer"),
        (_round(), [b"6", True], "not an integer"),
        (_round(), [6, False], "EXPIREAT"),
        (_round(), [6], "1 replies to 2"),
    ],
)
def test_a_reply_is_believed_only_when_it_could_be_true(
    batch: list[object], replies: list[object], lie: str | None
) -> None:
    found = implausible(batch, replies, session=1)  # type: ignore[arg-type]
    if lie is None:
        assert found is None
    else:
        assert found is not None and lie in found
