"""Does a big policy reload stall the checks? (issue 10 item 9)

    .venv/bin/python -m bench reload-stall [--rules 40000] [--rate 200] [--rounds 3] [--invalid]

Writes one policy file of `--rules` rules (block YAML, about 90 bytes a rule: 40,000 rules make
3.6 MB, more than the 2.5 MB of the report), starts the real `authz serve` on it, keeps an
open-loop check load on it over gRPC (`--rate` checks a second, each sent on schedule whatever
the previous ones do, so a stall shows as latency instead of as fewer requests), then changes
one rule and sends SIGHUP.
(`--invalid`: a version with one error, so the reload reads everything and is rejected.)
Reported per round: how long the reload took (SIGHUP to the outcome's log line), and
the latency of the checks sent while it ran: count, p50, p99 and max. Nothing is asserted: the
machine is shared, so run a few rounds and read the medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import fixtures
from bench.procs import PYTHON, free_port, started

CHECK = "/envoy.service.auth.v3.Authorization/Check"
RELOADED = "policies reloaded from"
REJECTED = "policy reload rejected"


def write_policy(path: Path, rules: int, version: int, *, invalid: bool = False) -> None:
    """`rules` rules for fixtures.HOST; `version` only changes the last rule's name, so each
    version has a new revision and the same size. `invalid` misspells the last rule's action,
    so the whole file is read, validated and rejected."""
    lines = [f"hosts: [{fixtures.HOST}]", "rules:"]
    for i in range(rules - 1):
        method = ("GET", "POST", "PUT", "DELETE")[i % 4]
        action = "deny" if i % 10 == 0 else "allow"
        lines += [
            f"  - name: r{i}",
            f"    action: {action}",
            f"    to: [{{methods: [{method}], paths: ['/svc{i}/{{**}}']}}]",
        ]
    lines += [
        f"  - name: orders-v{version}",
        "    action: alow" if invalid else "    action: allow",
        "    to: [{methods: [GET], paths: ['/api/orders/{*}']}]",
    ]
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


@dataclass
class Round:
    reload_s: float
    latencies: list[float]  # seconds, of the checks sent while the reload ran
    failed: int
    before: list[float]  # the same, for the `settle` seconds before it: the machine's noise

    def pct(self, q: float) -> float:
        return pct(self.latencies, q)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Load:
    """Open-loop checks at `rate`/s on one channel; records (sent_at, latency or None)."""

    def __init__(self, address: str, rate: float) -> None:
        self.samples: list[tuple[float, float | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rate = rate
        self._channel = grpc.insecure_channel(address)
        self._call = self._channel.unary_unary(
            CHECK, request_serializer=None, response_deserializer=None
        )
        self._data = fixtures.check_request(None).SerializeToString()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        time.sleep(1.0)  # let the last answers arrive
        self._channel.close()

    def _run(self) -> None:
        interval = 1.0 / self._rate
        next_at = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            sent = time.perf_counter()
            future = self._call.future(self._data, timeout=30)
            future.add_done_callback(lambda f, sent=sent: self._done(f, sent))
            next_at += interval

    def _done(self, future: grpc.Future, sent: float) -> None:
        latency = time.perf_counter() - sent if future.exception() is None else None
        with self._lock:
            self.samples.append((sent, latency))

    def window(self, start: float, end: float) -> tuple[list[float], int]:
        with self._lock:
            chosen = [s for s in self.samples if start <= s[0] <= end]
        return [lat for _, lat in chosen if lat is not None], sum(
            1 for _, lat in chosen if lat is None
        )


def wait_serving(address: str, proc: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"not SERVING after {timeout} s")


def one_round(tmp: Path, rules: int, rate: float, settle: float, invalid: bool) -> Round:
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    policy = policies / "big.yaml"
    write_policy(policy, rules, 1)
    print(f"policy file: {policy.stat().st_size / 1e6:.1f} MB, {rules} rules", flush=True)
    log = tmp / "authz.log"
    address = f"127.0.0.1:{free_port()}"
    argv = [PYTHON, "-m", "authz", "serve", "--policies", str(policies)]
    argv += ["--listen", address, "--no-watch", "--log-level", "info"]
    with started(argv, log=log, env={"PYTHONUNBUFFERED": "1"}) as proc:
        wait_serving(address, proc, timeout=300)
        with Load(address, rate) as load:
            time.sleep(settle)
            write_policy(policy, rules, 2, invalid=invalid)
            outcome = REJECTED if invalid else RELOADED
            before = log.read_text().count(outcome)
            start = time.perf_counter()
            os.kill(proc.pid, signal.SIGHUP)
            while log.read_text().count(outcome) == before:
                if proc.poll() is not None or time.perf_counter() - start > 600:
                    raise RuntimeError(f"no reload: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            end = time.perf_counter()
            time.sleep(settle)
        latencies, failed = load.window(start, end)
        before, _ = load.window(start - settle + 0.5, start)
    return Round(end - start, latencies, failed, before)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench reload-stall", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rules", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=200.0, help="checks per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load around it")
    parser.add_argument(
        "--invalid", action="store_true", help="the new version has an error: measure a rejection"
    )
    args = parser.parse_args(argv)
    rounds: list[Round] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="authz-reload-") as name:
            result = one_round(Path(name), args.rules, args.rate, args.settle, args.invalid)
        rounds.append(result)
        print(
            f"round {r + 1}: reload {result.reload_s:.2f} s; {len(result.latencies)} checks "
            f"during it ({result.failed} failed): p50 {result.pct(0.5) * 1000:.1f} ms, "
            f"p99 {result.pct(0.99) * 1000:.1f} ms, max {result.pct(1.0) * 1000:.1f} ms "
            f"(before the reload: p99 {pct(result.before, 0.99) * 1000:.1f} ms, "
            f"max {pct(result.before, 1.0) * 1000:.1f} ms)",
            flush=True,
        )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(
        f"median of {len(rounds)}: reload {med([r.reload_s for r in rounds]):.2f} s, "
        f"p99 {med([r.pct(0.99) for r in rounds]) * 1000:.1f} ms, "
        f"max {med([r.pct(1.0) for r in rounds]) * 1000:.1f} ms "
        f"({args.rules} rules, {args.rate:g} checks/s)"
    )
    return 0
