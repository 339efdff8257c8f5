"""`authz serve --workers N`: N worker processes, each with its own listener.

Envoy keeps a few long-lived HTTP/2 connections to its ext_authz cluster, so N processes sharing
one port with SO_REUSEPORT would see the kernel place those few connections once, often leaving a
worker idle. Instead worker i listens on its own address — `host:port+i`, or `unix:/x.sock` with
`.i` before the suffix (`/x.1.sock`) — and the operator lists every address as an endpoint of the
Envoy cluster (`authz envoy-config --authz ... --authz ...`); Envoy then balances requests, not
connections, across them. Worker 0 keeps the configured address, so `--workers 1` is unchanged.

The supervisor runs the same command line in each worker with AUTHZ_WORKER_INDEX set, forwards
SIGTERM/SIGINT/SIGHUP, restarts a worker that dies, and exits 0 once every worker has stopped
cleanly after a SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import PurePosixPath

WORKER_INDEX_ENV = "AUTHZ_WORKER_INDEX"
RESTART_DELAY_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 30.0

log = logging.getLogger("authz.workers")


def worker_index() -> int | None:
    """This process's worker index, or None in a process that is not a supervised worker."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value is not None and value.isdigit() else None


def address_for_worker(address: str, index: int) -> str:
    """Worker `index`'s variant of a listen or admin address."""
    if index == 0:
        return address
    if address.startswith("unix:"):
        path = PurePosixPath(address.removeprefix("unix:"))
        return f"unix:{path.with_name(f'{path.stem}.{index}{path.suffix}')}"
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + index}"


def addresses_for_worker(addresses: Sequence[str], index: int) -> tuple[str, ...]:
    return tuple(address_for_worker(a, index) for a in addresses)


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, workers: int, argv: Sequence[str]) -> None:
        self._argv = [sys.executable, "-m", "authz", *argv]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._stopping = False
        self._reload_requested = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_INDEX_ENV: str(index)}
        self._processes[index] = subprocess.Popen(self._argv, env=env)
        log.info("worker %d started (pid %d)", index, self._processes[index].pid)  # type: ignore[union-attr]

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        self._send(signal.SIGTERM)

    def _on_reload(self, _signum: int, _frame: object) -> None:
        self._send(signal.SIGHUP)

    def _send(self, sig: signal.Signals) -> None:
        for process in self._processes:
            if process is not None and process.poll() is None:
                process.send_signal(sig)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for index in range(len(self._processes)):
            self._spawn(index)
        while not self._stopping:
            for index, process in enumerate(self._processes):
                if process is not None and process.poll() is not None and not self._stopping:
                    log.error("worker %d exited with %s; restarting", index, process.returncode)
                    time.sleep(RESTART_DELAY_SECONDS)
                    if not self._stopping:
                        self._spawn(index)
            time.sleep(0.2)
        return self._wait_all()

    def _wait_all(self) -> int:
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        status = 0
        for index, process in enumerate(self._processes):
            if process is None:
                continue
            try:
                code = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", index)
                process.kill()
                code = process.wait()
            if code != 0:
                status = 1
        log.info("all workers stopped")
        return status
