"""CPU time per `Engine.check` of the realistic request, one variant per process, so the same
script measures today's code (run it with PYTHONPATH at a checkout of main) and this one.

    python -m bench miss-cost base|off|miss|hit

`base`: the engine as the code under PYTHONPATH builds it by default (on main: no decision
cache); `off`/`miss`/`hit`: this branch without the cache, with it and a new path every call
(every check misses and is inserted), with it and the same request (every check hits).
CPU time (`time.process_time`), so other processes on a shared machine disturb it less.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.policy import PolicyStore, load_policy_set
from authz.wire.inbound import to_request
from bench import fixtures


def measure(mode: str, rounds: int = 31, calls: int = 500) -> float:
    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    with tempfile.TemporaryDirectory() as tmp:
        directory = fixtures.write_policies(Path(tmp) / "p", 1000, [key])
        policy_set = load_policy_set(directory)
        registry = KeyRegistry()
        registry.ensure(policy_set.jwt_providers)
        registry.wait_ready(10)
        options: dict[str, Any] = {} if mode == "base" else {"decision_cache": mode != "off"}
        resolver = ServiceResolver(Settings(policies=str(directory)), registry)
        engine = Engine(PolicyStore(policy_set), resolver, **options)
        request = to_request(fixtures.check_request(token), Settings().limits)
        requests = iter(
            [replace(request, path=f"/api/orders/{i}") for i in range(calls * (rounds + 1))]
        )
        samples = []
        for r in range(rounds + 1):
            gc.collect()
            gc.disable()
            started = time.process_time()
            for _ in range(calls):
                engine.check(request if mode == "hit" else next(requests))
            if r:  # the first round warms up
                samples.append((time.process_time() - started) / calls * 1e6)
            gc.enable()
        registry.close()
    return statistics.median(samples)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench miss-cost")
    parser.add_argument("mode", choices=("base", "off", "miss", "hit"))
    mode = parser.parse_args(argv).mode
    print(f"{mode} {measure(mode):.1f} µs per check (CPU time, median of rounds)")
    return 0
