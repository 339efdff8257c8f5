"""The cost of tracing (issue 19), in process: `AuthorizationService.check` (wire in, engine,
wire out, the metrics observer, as `authz serve` wires it) of the realistic request with a warm
RS256 token and a W3C `traceparent`, 1,000 rules, measured alternately:

* off: no --otlp-endpoint (nothing imported, no tracer);
* on, not sampled: tracing on, the caller's context says "not sampled" (flags 00), ratio 1.0;
* on, ratio 1.0: every check exported (a sampled parent), to a real OTLP/HTTP receiver on
  loopback; the batch thread's encoding and sending are flushed inside the timing (they take
  the same CPU and GIL), so they count here and not in the next variant.

    python -m bench tracing [--calls N] [--rounds N]

Run with PYTHONPATH of another tree and `--off-only` to time that tree's check the same way
(`PYTHONPATH=/path/to/main python bench/tracing.py --off-only`), which is how "off == today"
is compared across versions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file, against whichever authz is on the path
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.observe import Metrics
from authz.policy import PolicyStore, load_policy_set
from authz.server import AuthorizationService
from bench import fixtures
from bench.timing import alternate

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def _request(token: str, traceparent: str) -> Any:
    message = fixtures.check_request(token)
    message.attributes.request.http.headers["traceparent"] = traceparent
    return message


def run(calls: int, rounds: int, off_only: bool) -> dict[str, float]:
    key = fixtures.make_key("RS256")
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        directory = fixtures.write_policies(Path(tmp) / "rules", 1000, [key])
        policy_set = load_policy_set(directory)
        registry = KeyRegistry()
        registry.ensure(policy_set.jwt_providers)
        assert registry.wait_ready(10)
        settings = Settings(policies=str(directory))
        engine = Engine(PolicyStore(policy_set), ServiceResolver(settings, registry))
        observers = [Metrics()]
        token = key.token()
        sampled, not_sampled = _request(token, SAMPLED), _request(token, NOT_SAMPLED)
        off = AuthorizationService(engine, settings, observers)
        assert off.check(sampled).HasField("ok_response")
        variants: dict[str, Callable[[int], None]] = {"off": lambda n: _loop(off, sampled, n)}
        closers: list[Callable[[], None]] = [registry.close]
        if not off_only:
            from authz.observe.tracing import Tracing

            # The receiver runs in a process of its own: its decoding is not the check's cost.
            receiver = subprocess.Popen(
                [sys.executable, "-c", _RECEIVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            assert receiver.stdout is not None and receiver.stdin is not None
            endpoint = receiver.stdout.readline().strip()
            tracing = Tracing(endpoint, ratio=1.0, max_queue_size=1_000_000)
            closers += [lambda: _stop(receiver), tracing.close]
            on = AuthorizationService(engine, settings, observers, tracer=tracing)
            variants["on, not sampled"] = lambda n: _loop(on, not_sampled, n)

            def exported(n: int) -> None:
                # The export thread's work (encoding, sending) is the sampled checks' cost:
                # flushed inside their timing, so it does not leak into the next variant's.
                _loop(on, sampled, n)
                tracing.flush()

            variants["on, ratio 1.0"] = exported
        try:
            results = alternate(variants, calls=calls, rounds=rounds)
        finally:
            for close in reversed(closers):
                close()
        if not off_only:
            print(f"spans dropped: {tracing.dropped}")
    return {name: result.median for name, result in results.items()}


_RECEIVER = """
import sys
from tests.support.otlp import OtlpReceiver
receiver = OtlpReceiver().start()
print(receiver.endpoint, flush=True)
sys.stdin.read()
print(len(receiver.spans), flush=True)
"""


def _stop(receiver: subprocess.Popen[str]) -> None:
    assert receiver.stdin is not None and receiver.stdout is not None
    receiver.stdin.close()
    print(f"spans received: {receiver.stdout.readline().strip()}")
    receiver.wait(30)


def _loop(service: AuthorizationService, message: Any, n: int) -> None:
    for _ in range(n):
        service.check(message)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tracing")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--off-only", action="store_true")
    args = parser.parse_args(argv)
    import authz

    print(f"authz from {Path(authz.__file__).parent}")
    medians = run(args.calls, args.rounds, args.off_only)
    base = medians["off"]
    for name, seconds in medians.items():
        print(f"{name:>16}: {seconds * 1e6:8.1f} us/check  {seconds / base:5.2f}x off")
    return 0
