"""A real Redis server process on 127.0.0.1 (free port), for the shared rate-limit counters.

    with RedisServer() as redis:
        redis.url                 # redis://127.0.0.1:PORT/0
        redis.kill()              # SIGKILL: the store goes away mid-test
        redis.start()             # the same port again, empty (no persistence)
        redis.client()            # a redis-py client, for assertions

The binary is Debian's `redis-server` (./dev installs it) or `valkey-server`; the server keeps
nothing on disk and listens on loopback only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.support.certs import CertPaths
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
