"""`authz serve` replicas sharing a rate-limit store, for the store's tests and the e2e ones.

replica = Replica(directory, "a", workers=4, store=url)  # on unix sockets: no port races
replica.check(replica.sockets[1], "/limited/x", {"x-client": "alice"})  # -> 200, 429, ...
replica.readyz()["rate_limits"]["state"]
replica.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from tests.support.ports import LOOPBACK, free_port_run
from tests.support.service import is_serving, spawn_serve

# Per hour, so a burst never straddles a window (fixed windows start afresh).
POLICY = """\
rules:
  - name: no-admin
    action: deny
    to: [{paths: ["/admin/{**}"]}]
  - name: open
    action: allow
    to: [{paths: ["/{**}"]}]
rate_limits:
  - name: per-client
    to: [{paths: ["/limited/{**}", "/admin/{**}"]}]
    key: header:x-client
    limit: LIMIT
    per: hour
"""


def write_policy(directory: Path, limit: int = 100) -> Path:
    """The policy directory the replicas serve: `/limited/...` limited per `x-client`."""
    policies = directory / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "limits.yaml").write_text(POLICY.replace("LIMIT", str(limit)))
    return policies


class Replica:
    """`authz serve --workers N` on unix sockets, sharing `store`, its log in DIR/NAME.log."""

    def __init__(self, directory: Path, name: str, workers: int, store: str, *args: str) -> None:
        self.sockets = [
            f"unix:{directory / name}.sock" if i == 0 else f"unix:{directory / name}.{i}.sock"
            for i in range(workers)
        ]
        self.log_path = directory / f"{name}.log"
        self.admin_port = free_port_run(workers)  # worker i's admin endpoint is on port + i
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
            *args,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._channels: dict[str, Any] = {}

    def serving(self) -> bool:
        return all(is_serving(address) for address in self.sockets)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, path: str) -> str:
        """Worker 0's admin endpoint (`/readyz` is 200 whatever the store does)."""
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin_port}{path}", timeout=5) as r:
            assert r.status == 200
            return str(r.read().decode())

    def readyz(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.admin("/readyz"))
        return answer

    def store_state(self) -> str:
        return str(self.readyz()["rate_limits"]["state"])

    def check(self, address: str, path: str, headers: dict[str, str]) -> int:
        """One Check to `address` (one worker): the HTTP status Envoy would answer with."""
        from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

        message = external_auth_pb2.CheckRequest()
        http = message.attributes.request.http
        http.method, http.host, http.path = "GET", "shop.example.com", path
        for name, value in {":method": "GET", ":path": path, **headers}.items():
            http.headers[name] = value
        stub = self._channels.get(address)
        if stub is None:
            channel = grpc.insecure_channel(address)
            stub = self._channels[address] = (
                channel,
                external_auth_pb2_grpc.AuthorizationStub(channel),  # type: ignore[no-untyped-call]
            )
        answer = stub[1].Check(message, timeout=10)
        if answer.status.code == 0:
            return 200
        return int(answer.denied_response.status.code)

    def stop(self) -> None:
        for channel, _ in self._channels.values():
            channel.close()
        self._channels.clear()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_replicas(
    directory: Path, store: str, *, replicas: int = 2, workers: int = 1, args: tuple[str, ...] = ()
) -> list[Replica]:
    """Start `replicas` replicas of `workers` workers each and wait (bounded) until all serve;
    on a failure every one is stopped and the logs are in the error."""
    for attempt in range(2):  # a port taken meanwhile ("address already in use"): once more
        started = [
            Replica(directory, chr(ord("a") + i), workers, store, *args) for i in range(replicas)
        ]
        try:
            # Generous: eight Python processes start at once on a shared two-core machine.
            wait_until(_all_serving(started), timeout=240)
            return started
        except AssertionError as error:
            logs = "".join(f"\n{r.log_path.name}: {r.log()[-2000:]}" for r in started)
            for replica in started:
                replica.stop()
            if attempt or "already in use" not in logs:
                raise AssertionError(f"{error}: the replicas' logs:{logs}") from None
    raise AssertionError("unreachable")


def _all_serving(replicas: list[Replica]) -> Callable[[], bool]:
    def check() -> bool:
        if any(r.process.poll() is not None for r in replicas):
            raise AssertionError("a replica exited")
        return all(r.serving() for r in replicas)

    return check


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not reached in {timeout:g}s{why}")
