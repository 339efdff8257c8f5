"""HTTP mode vs gRPC mode through a real Envoy, side by side in one run (issue 14).

    python -m bench http-mode [--rounds 3] [--seconds 8]

Layouts (Envoy --concurrency 1, direct response, wrk -t1 -c32, the bench's 1,000-rule policy
and an RS256 token, alternating rounds):
* `grpc w1`      ext_authz grpc_service to `python -m authz serve` (one process);
* `http w1`      ext_authz http_service (authz.envoy_http's filter) to
                 `python -m authz serve --no-grpc --http-listen` (one process);
* `empty http`   the same http_service to an empty granian RSGI app that answers 200.
Then the latency (p50/p90/p99, µs, Envoy included) of `grpc w1` and `http w1` at 500 req/s.
The empty app runs from `python -m bench serve empty-http HOST:PORT` until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import fixtures, h2load
from bench.envoy_load import (
    bootstrap,
    fixed_rate,
    interleaved_throughput,
    percentile,
    run_envoy,
)
from bench.procs import REPO, free_port, started, wait_port


def serve_empty(argv: list[str]) -> None:
    """`ADDRESS`: an empty RSGI app (200, no headers) on the service's own granian setup, the
    ceiling."""
    (address,) = argv
    from authz.config import Limits
    from authz.http_server import HttpServers

    async def handler(scope: Any, proto: Any) -> None:
        proto.response_empty(200, [])

    async def main() -> None:
        servers = HttpServers([(handler, address)], Limits())
        await servers.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await servers.stop()

    asyncio.run(main())


def http_bootstrap(listener: int, admin: int, port: int) -> dict[str, Any]:
    from authz.envoy_bootstrap import BootstrapOptions
    from authz.envoy_http import http_ext_authz_filter

    config = bootstrap(listener, admin, "authz", [port])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    ext = http_ext_authz_filter(BootstrapOptions(authz_timeout_ms=2000))
    ext["typed_config"]["http_service"]["server_uri"]["cluster"] = "ext_authz"
    filters[0] = ext
    cluster = config["static_resources"]["clusters"][0]
    cluster.pop("typed_extension_protocol_options")
    return config


@contextlib.contextmanager
def authz_process(tmp: Path, argv: list[str], port: int, name: str) -> Iterator[int]:
    log = tmp / f"{name}.log"
    # cwd is the repository: `-m authz` and `-m bench` import this checkout.
    with started(argv, log=log, env={"PYTHONPATH": str(REPO)}) as proc:
        wait_port(port, proc, log)
        yield port


def compare(rounds: int, seconds: float, rate: int = 500) -> dict[str, Any]:
    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    with (
        tempfile.TemporaryDirectory(prefix="authz-bench-http-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        policies = fixtures.write_policies(tmp / "policies", 1000, [key])
        py = sys.executable
        ports = {n: free_port() for n in ("grpc", "http", "empty")}
        serve = [py, "-m", "authz", "serve", "--policies", str(policies), "--no-watch"]
        quiet = ["--log-level", "warning"]
        grpc = [*serve, "--listen", f"127.0.0.1:{ports['grpc']}", *quiet]
        http = [*serve, "--no-grpc", "--http-listen", f"127.0.0.1:{ports['http']}", *quiet]
        empty = [py, "-m", "bench", "serve", "empty-http", f"127.0.0.1:{ports['empty']}"]
        for kind, argv in (("grpc", grpc), ("http", http), ("empty", empty)):
            stack.enter_context(authz_process(tmp, argv, ports[kind], kind))
        listeners: dict[str, int] = {}
        for n, make in (
            ("grpc w1", lambda li, ad: bootstrap(li, ad, "authz", [ports["grpc"]])),
            ("http w1", lambda li, ad: http_bootstrap(li, ad, ports["http"])),
            ("empty http", lambda li, ad: http_bootstrap(li, ad, ports["empty"])),
        ):
            listener, admin = free_port(), free_port()
            listeners[n] = stack.enter_context(
                run_envoy(tmp, "http", make(listener, admin), listener, admin)
            )
        throughput = interleaved_throughput(listeners, token, rounds, seconds)
        # Latency added at a fixed rate (h2load --rps to Envoy), same rounds interleaved.
        latency: dict[str, dict[str, float]] = {}
        if h2load.available():
            samples: dict[str, list[float]] = {n: [] for n in ("grpc w1", "http w1")}
            for _round in range(rounds):
                for n in samples:
                    samples[n] += fixed_rate(listeners[n], token, tmp, rate=rate, seconds=seconds)
            for n, values in samples.items():
                latency[n] = {f"p{int(q * 100)}": percentile(values, q) for q in (0.5, 0.9, 0.99)}
    median = {n: statistics.median(v) for n, v in throughput.items()}
    return {
        "throughput": throughput,
        "median": median,
        "http/grpc": median["http w1"] / median["grpc w1"],
        "http/empty": median["http w1"] / median["empty http"],
        f"latency_us at {rate} req/s": latency,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench http-mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(compare(args.rounds, args.seconds), indent=2))
    return 0
