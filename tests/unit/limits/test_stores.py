"""`--rate-limit-store` URLs: one server, a Redis Cluster, Sentinel."""

from __future__ import annotations

import pytest

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
