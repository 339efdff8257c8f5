"""Where the shared counters live: the `--rate-limit-store` URL, read once, and the redis-py
client it names. Three forms, each served by redis-py's own client for it:

- one server: `redis://HOST:PORT/DB`, `rediss://...` (TLS), `unix:///path` (redis-py's
  `Redis.from_url`, which reads the query options itself);
- a Redis Cluster: `redis+cluster://H1:P1,H2:P2` or `rediss+cluster://...` (`RedisCluster`;
  any reachable node is enough to find the others);
- Sentinel: `redis+sentinel://H1:P1,H2:P2/MASTER[/DB]` or `rediss+sentinel://...` (`Sentinel`
  asked for MASTER's current address on every new connection, so a failover is followed).

The password comes from the URL or from $AUTHZ_RATE_LIMIT_STORE_PASSWORD (not a flag: flags show
in `ps`). Timeouts are short and redis-py's own retries are off: the background thread must
notice a hung or failing store within a second and count locally, not retry behind the checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PASSWORD_ENV = "AUTHZ_RATE_LIMIT_STORE_PASSWORD"
SINGLE, CLUSTER, SENTINEL = "single", "cluster", "sentinel"
TIMEOUT = 0.5  # seconds, for every socket operation of the store's clients
# Query options of the cluster and Sentinel forms (the single form passes its own to redis-py).
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_DEFAULT_PORT = {CLUSTER: 6379, SENTINEL: 26379}


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A `--rate-limit-store` URL, checked. `nodes` and the rest are empty for `single`, which
    redis-py reads from `url` itself."""

    url: str
    mode: str
    nodes: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: tuple[tuple[str, str], ...] = ()


def parse(url: str) -> StoreURL:
    """Check `url`; ValueError says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(USAGE)
    if scheme in ("redis", "rediss", "unix"):
        _check_single(url, scheme)
        return StoreURL(url, SINGLE)
    base, plus, mode = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or mode not in (CLUSTER, SENTINEL):
        raise ValueError(USAGE)
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) if colon else None
    nodes = tuple(_node(host, _DEFAULT_PORT[mode]) for host in hosts.split(","))
    segments = [unquote(s) for s in path.split("/") if s]
    master, db = "", 0
    if mode == SENTINEL:
        if not segments or len(segments) > 2:
            raise ValueError("name the master: redis+sentinel://H1:P1,H2:P2/MASTER[/DB]")
        master = segments[0]
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ValueError(f"the database {segments[1]!r} is not a number")
            db = int(segments[1])
    elif segments:
        raise ValueError("a Redis Cluster has no database or master: redis+cluster://H1:P1,H2:P2")
    options = tuple(parse_qsl(query, keep_blank_values=True))
    for name, _ in options:
        if name not in _TLS_OPTIONS:
            raise ValueError(f"unknown option {name!r} (known: {', '.join(_TLS_OPTIONS)})")
    if options and base != "rediss":
        raise ValueError("TLS options need the rediss+ form")
    tls = base == "rediss"
    return StoreURL(url, mode, nodes, tls, master, db, username, password, options)


USAGE = (
    "use memory, redis://HOST:PORT/DB, rediss://..., unix:///path, "
    "redis+cluster://H1:P1,H2:P2, redis+sentinel://H1:P1,H2:P2/MASTER (or the rediss+ forms)"
)


def _check_single(url: str, scheme: str) -> None:
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("the unix socket needs a path")
        return
    try:
        parts.port  # noqa: B018 (it raises for a bad port)
    except ValueError as error:
        raise ValueError(str(error)) from error
    if not parts.hostname:
        raise ValueError("no host")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database {db!r} is not a number")


def _node(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    host, port = text, ""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"{text!r} is not HOST:PORT")
        port = port[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: the port {port!r} is not a number from 1 to 65535")
    return host, int(port) if port else default_port


def connect(store: StoreURL) -> Any:
    """A new redis-py client for `store` (connecting may raise: the caller counts locally)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    common: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    password = store.password or os.environ.get(PASSWORD_ENV) or None
    if password:
        common["password"] = password
    if store.mode == SINGLE:
        return redis.Redis.from_url(store.url, **common)
    if store.username:
        common["username"] = store.username
    if store.tls:
        common["ssl"] = True
        common.update(store.options)
    if store.mode == CLUSTER:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in store.nodes],  # type: ignore[no-untyped-call]
            retry=Retry(NoBackoff(), 0),
            **common,
        )
    from redis.sentinel import Sentinel

    # The Sentinels get the timeouts and TLS, not the data nodes' password.
    sentinel_options = {k: v for k, v in common.items() if k not in ("password", "username")}
    sentinel = Sentinel(list(store.nodes), sentinel_kwargs=sentinel_options, **common)
    return sentinel.master_for(store.master, db=store.db, **common)


def is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def safe(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{path}"
