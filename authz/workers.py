"""`authz serve --workers N`: N worker processes, each with its own listener.

Envoy keeps a few long-lived HTTP/2 connections to its ext_authz cluster, so N processes sharing
one port with SO_REUSEPORT would see the kernel place those few connections once, often leaving a
worker idle. Instead worker i listens on its own address — `host:port+i`, or `unix:/x.sock` with
`.i` before the suffix (`/x.1.sock`) — and the operator lists every address as an endpoint of the
Envoy cluster (`authz envoy-config --authz ... --authz ...`); Envoy then balances requests, not
connections, across them. Worker 0 keeps the configured address, so `--workers 1` is unchanged.

The admin endpoint is derived the same way: with `--admin 127.0.0.1:9092 --workers 3`, worker i
serves /metrics, /healthz and /readyz on port 9092+i (9092, 9093, 9094); scrape and probe each.
Every derived address of every worker must be distinct (`--listen :9191 --admin :9192
--workers 2` would give worker 1 the gRPC port 9192 that worker 0's admin uses): the supervisor
refuses such a set before starting anything.

The supervisor runs the same command line in each worker with AUTHZ_WORKER_INDEX set, forwards
SIGTERM/SIGINT/SIGHUP, restarts a worker that dies, gives up (stopping the others and exiting 1)
when a worker has died MAX_RESTARTS times in a row without staying up for HEALTHY_SECONDS,
and exits 0 once every worker has stopped cleanly after a SIGTERM. A worker that cannot bind
its address (it exits with EXIT_LISTEN after saying which address and why) did not crash:
restarting it would fail the same way while the others serve a part of the traffic, so the
supervisor stops every worker and exits EXIT_LISTEN, as one process does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from authz import addresses
from authz.config import Settings
from authz.errors import ConfigError

WORKER_INDEX_ENV = "AUTHZ_WORKER_INDEX"
EXIT_LISTEN = 2  # `authz serve` cannot bind an address (one process, a worker, the supervisor)
RESTART_DELAY_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 30.0
MAX_RESTARTS = 5  # in a row, each dying within HEALTHY_SECONDS of its start
HEALTHY_SECONDS = 60.0

log = logging.getLogger("authz.workers")


def worker_index() -> int | None:
    """This process's worker index, or None in a process that is not a supervised worker."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value is not None and value.isdigit() else None


def address_for_worker(address: str, index: int) -> str:
    """Worker `index`'s variant of a listen or admin address."""
    return addresses.shifted(address, index)


def addresses_for_worker(addresses: Sequence[str], index: int) -> tuple[str, ...]:
    return tuple(address_for_worker(a, index) for a in addresses)


def for_worker(settings: Settings, index: int) -> Settings:
    """The settings of worker `index`: its own listen, HTTP and admin addresses."""
    admin = address_for_worker(settings.admin, index) if settings.admin else None
    return dataclasses.replace(
        settings,
        listen=addresses_for_worker(settings.listen, index),
        http_listen=addresses_for_worker(settings.http_listen, index),
        admin=admin,
    )


def _usable(address: str) -> bool:
    try:
        addresses.parse(address)
    except addresses.AddressError:
        return False
    return True


def check_worker_addresses(settings: Settings) -> None:
    """Raises ConfigError when two workers (or one worker's gRPC, HTTP and admin) would use the same
    address, or a derived port is over 65535."""
    seen: dict[str, str] = {}
    problems: list[str] = []
    for index in range(settings.workers):
        mine = for_worker(settings, index)
        named = [(f"--listen {a}", a) for a in mine.listen] if settings.grpc else []
        named += [(f"--http-listen {a}", a) for a in mine.http_listen]
        if mine.admin:
            named.append((f"--admin {mine.admin}", mine.admin))
        for what, address in named:
            usable = _usable(address)
            if not usable:
                problems.append(f"worker {index}: {what}: the port is over 65535")
            owner = f"worker {index}'s {what.split()[0]}" if settings.workers > 1 else what
            key = addresses.bindable(address) if usable else address  # `:9192` is 0.0.0.0:9192
            if key in seen:
                problems.append(f"{address} would be used by {seen[key]} and {owner}")
            seen.setdefault(key, owner)
    if problems:
        head = (
            f"--workers {settings.workers}: worker i listens on each port + i "
            "(see `authz serve --help`), and these collide:"
            if settings.workers > 1
            else "these addresses collide:"
        )
        raise ConfigError("\n  ".join([head, *problems]))


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, workers: int, argv: Sequence[str]) -> None:
        self._argv = [sys.executable, "-m", "authz", *argv]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._stopping = False
        self._started = [0.0] * workers
        self._failures = [0] * workers  # deaths in a row, each soon after its start

    def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_INDEX_ENV: str(index)}
        self._started[index] = time.monotonic()
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
                if process is None or process.poll() is None or self._stopping:
                    continue
                if process.returncode == EXIT_LISTEN:
                    log.info("worker %d cannot listen (see above): stopping every worker", index)
                    self._stop_all()
                    return EXIT_LISTEN
                if not self._restart(index, process.returncode):
                    self._stop_all()
                    return 1
            time.sleep(0.2)
        return self._wait_all()

    def _stop_all(self) -> None:
        self._stopping = True
        self._send(signal.SIGTERM)
        self._wait_all()

    def _restart(self, index: int, code: int) -> bool:
        """Restart a dead worker; False when it keeps dying (then the supervisor gives up)."""
        if time.monotonic() - self._started[index] < HEALTHY_SECONDS:
            self._failures[index] += 1
        else:
            self._failures[index] = 1
        if self._failures[index] >= MAX_RESTARTS:
            log.error(
                "worker %d exited with %s, %d times in a row within %.0fs of starting; "
                "giving up: stopping every worker (see the worker's messages above)",
                index,
                code,
                self._failures[index],
                HEALTHY_SECONDS,
            )
            return False
        log.error(
            "worker %d exited with %s; restarting (%d of %d)",
            index,
            code,
            self._failures[index],
            MAX_RESTARTS - 1,
        )
        time.sleep(RESTART_DELAY_SECONDS)
        if not self._stopping:
            self._spawn(index)
        return True

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
