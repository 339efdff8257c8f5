"""Real Redis server processes on 127.0.0.1 (free ports), for the shared rate-limit counters.

    with RedisServer() as redis:
        redis.url                 # redis://127.0.0.1:PORT/0
        redis.kill()              # SIGKILL: the store goes away mid-test
        redis.start()             # the same port again, empty (no persistence)
        redis.client()            # a redis-py client, for assertions

    with RedisCluster(tmp) as cluster:       # 3 masters + 3 replicas, `redis-cli --cluster create`
        cluster.url                          # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
        cluster.kill_master_of(key)          # SIGKILL the master of a key's slot ...
        cluster.wait_failover(old)           # ... until a replica took over (cluster_state:ok)

    with RedisSentinel(tmp) as sentinel:     # a master, a replica and 3 Sentinels
        sentinel.url                         # redis+sentinel://127.0.0.1:S1,.../authz
        sentinel.kill_master()               # SIGKILL the master; wait_failover() until replaced

The binary is Debian's `redis-server` (./dev installs it) or `valkey-server`; the server keeps
nothing on disk and listens on loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import pytest

from tests.support.certs import CertPaths, Pki
from tests.support.ports import LOOPBACK, free_port, wait_for_port


def redis_binary() -> str:
    """The server binary; skips the test (saying how to get it) when there is none."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    message = "no redis-server: ./dev test installs it (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI must run these, not skip them
    pytest.skip(message)


class RedisServer:
    def __init__(self, password: str | None = None, tls: CertPaths | None = None) -> None:
        """`tls`: serve TLS only, with this certificate (the URL is then rediss://)."""
        self.password = password
        self.tls = tls
        self.binary = redis_binary()
        self.port = free_port()
        self.url = self._url()
        self._process: subprocess.Popen[bytes] | None = None

    def _url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{LOOPBACK}:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> None:
        for _ in range(5):  # the port may have been taken meanwhile: retry on another
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    LOOPBACK,
                    *self._listen_args(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                    *(["--requirepass", self.password] if self.password else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for_port(LOOPBACK, self.port, timeout=10.0)
                if self._process.poll() is None:
                    return
            except TimeoutError:
                pass
            self.kill()
            self.port = free_port()
            self.url = self._url()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5, password=self.password)

    def wait_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wait_for_port(LOOPBACK, self.port, timeout=0.1)
            except TimeoutError:
                return

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _node_args(port: int, directory: Path, *extra: str) -> list[str]:
    return [
        "--bind", LOOPBACK,
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(directory / f"redis-{port}.log"),
        "--repl-diskless-sync-delay", "0",  # replicas in sync at once, ready to take over
        *extra,
    ]  # fmt: skip


class _Node:
    """One server process (a cluster node, a master, a replica or a Sentinel) on `port`."""

    def __init__(
        self, argv: list[str], port: int, ca: Path | None = None, password: str | None = None
    ) -> None:
        self.argv, self.port, self.ca, self.password = argv, port, ca, password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(LOOPBACK, self.port, timeout=10.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> Any:
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.ca is not None else {}
        return redis.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_timeout=5,
            decode_responses=True,
            password=self.password,
            **tls,
        )


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # a node restarting or not yet listening: ask again
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not reached in {timeout:g} s")


class _Topology:
    """Several redis-server processes started together: all of them stop on exit, and on a
    start that fails half-way."""

    def start(self) -> None:
        raise NotImplementedError

    def processes(self) -> Iterable[Any]:
        raise NotImplementedError

    def kill(self) -> None:
        for process in self.processes():
            process.kill()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class RedisCluster(_Topology):
    """Six `redis-server --cluster-enabled yes` nodes made a cluster of three masters with one
    replica each by `redis-cli --cluster create`. A node fails after 1 s without an answer
    (`cluster-node-timeout`), so a killed master is replaced in about two seconds."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, directory: Path, nodes: int = 6, tls: Pki | None = None) -> None:
        """`tls`: every node, the cluster bus and replication speak TLS only, with the PKI's
        server certificate (the URL is then rediss+cluster://...?ssl_ca_certs=CA)."""
        self.directory = directory
        self.binary = redis_binary()
        self.tls = tls
        self.size = nodes
        self.nodes: list[_Node] = []
        self.url = ""
        self._make_nodes()

    def _make_nodes(self) -> None:
        """Fresh ports and empty directories for every node."""
        directory, tls = self.directory, self.tls
        self.nodes = []
        for i in range(self.size):
            port, bus = free_port(), free_port()
            node_dir = directory / f"node{i}"
            shutil.rmtree(node_dir, ignore_errors=True)  # no nodes.conf of a failed attempt
            node_dir.mkdir(parents=True)
            argv = [
                self.binary,
                *_node_args(
                    port,
                    node_dir,
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(bus),
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
                    *self._tls_args(port),
                ),
            ]  # fmt: skip
            self.nodes.append(_Node(argv, port, tls.ca if tls is not None else None))
        hosts = ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:3])
        self.url = f"redis+cluster://{hosts}"
        if tls is not None:
            self.url = f"rediss+cluster://{hosts}?ssl_ca_certs={tls.ca}"

    def _tls_args(self, port: int) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cluster", "yes",
            "--tls-replication", "yes",
            "--tls-cert-file", str(self.tls.server.cert),
            "--tls-key-file", str(self.tls.server.key),
            # The cluster bus always verifies both ends: nodes present a clientAuth certificate.
            "--tls-client-cert-file", str(self.tls.client.cert),
            "--tls-client-key-file", str(self.tls.client.key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> None:
        for attempt in range(3):  # a free port taken meanwhile: again, on other ports
            try:
                self._start()
                return
            except (TimeoutError, subprocess.CalledProcessError, RuntimeError):
                self.kill()
                if attempt == 2:
                    raise
                self._make_nodes()

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
        if cli is None:
            pytest.skip("no redis-cli: ./dev test installs it with redis-server")
        tls = ["--tls", "--cacert", str(self.tls.ca)] if self.tls is not None else []
        subprocess.run(
            [
                cli, *tls, "--cluster", "create",
                *(f"{LOOPBACK}:{n.port}" for n in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and sees three masters, and every
        replica is in sync with its master."""

        def ok() -> bool:
            for node in self.live():
                info = node.client().cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_size"]) != 3:
                    return False
                replication = node.client().info("replication")
                if replication["role"] != "master" and replication["master_link_status"] != "up":
                    return False  # a replica not yet in sync could not take over
            return True

        _wait(ok, timeout, "cluster_state:ok")

    def live(self) -> list[_Node]:
        return [n for n in self.nodes if n.process is not None]

    def client(self) -> Any:
        from redis.cluster import RedisCluster as Client

        node = self.live()[0]
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls is not None else {}
        return Client(host=LOOPBACK, port=node.port, socket_timeout=5, decode_responses=True, **tls)

    def master_of(self, key: str) -> _Node:
        slot = self.client().keyslot(key)
        for node in self.live():
            for start, end, master, *_ in node.client().cluster("SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == master[1])
        raise RuntimeError(f"no master serves slot {slot}")

    def kill_master_of(self, key: str) -> _Node:
        """SIGKILL the master serving `key`'s slot; returns it (restart it with `.start()`)."""
        master = self.master_of(key)
        master.kill()
        return master

    def wait_failover(self, killed: _Node, timeout: float = 30.0) -> None:
        """Until a replica has taken over the killed master's slots and the cluster is ok."""

        def replaced() -> bool:
            for node in self.live():
                for _, _, master, *_ in node.client().cluster("SLOTS"):
                    if master[1] == killed.port:
                        return False
            return True

        _wait(replaced, timeout, "failover")
        self.wait_ok(timeout)

    def processes(self) -> Iterable[Any]:
        return self.nodes


class RedisSentinel(_Topology):
    """A master, one replica and three Sentinels watching it as `authz` (quorum 2). A master is
    down after 1 s without an answer (`down-after-milliseconds`), and replaced soon after."""

    MASTER = "authz"

    def __init__(self, directory: Path, sentinels: int = 3, password: str | None = None) -> None:
        """`password`: the master and the replica require it (the Sentinels do not)."""
        self.directory = directory
        self.binary = redis_binary()
        self.password = password
        directory.mkdir(parents=True, exist_ok=True)
        master_port, replica_port = free_port(), free_port()
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = _Node(
            [self.binary, *_node_args(master_port, directory, *auth)],
            master_port,
            password=password,
        )
        self.replica = _Node(
            [
                self.binary,
                *_node_args(
                    replica_port, directory, "--replicaof", LOOPBACK, str(master_port), *auth
                ),
            ],
            replica_port,
            password=password,
        )
        self.sentinels: list[_Node] = []
        for i in range(sentinels):
            port = free_port()
            config = directory / f"sentinel{i}.conf"
            config.write_text(
                f"port {port}\nbind {LOOPBACK}\ndaemonize no\ndir {directory}\n"
                f"sentinel monitor {self.MASTER} {LOOPBACK} {master_port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 4000\n"
                + (f"sentinel auth-pass {self.MASTER} {password}\n" if password else "")
            )
            self.sentinels.append(_Node([self.binary, str(config), "--sentinel"], port))
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{self.MASTER}"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        _wait(
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            30,
            "the replica in sync",
        )
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(lambda: self.master_port() == self.master.port, 30, "the Sentinels agree")

    def master_port(self) -> int:
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.MASTER)
        return int(port)

    def kill_master(self) -> _Node:
        """SIGKILL the current master; returns it."""
        current = self.master if self.master_port() == self.master.port else self.replica
        current.kill()
        return current

    def wait_failover(self, killed: _Node, timeout: float = 30.0) -> None:
        """Until the Sentinels name a master other than `killed`, and it takes writes."""

        def replaced() -> bool:
            port = self.master_port()
            if port == killed.port:
                return False
            node = self.master if port == self.master.port else self.replica
            return node.client().info("replication")["role"] == "master"

        _wait(replaced, timeout, "a Sentinel failover")

    def processes(self) -> Iterable[Any]:
        return (*self.sentinels, self.master, self.replica)
