"""`python -m bench run [--quick]`: every bench, side by side, then docs/benchmarks.md + .png.

Parts that need a tool that is not installed (h2load, wrk, Envoy) are skipped and the report
says so. Nothing asserts a number: the report prints medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    envoy_load,
    export_load,
    grpc_load,
    h2load,
    http_mode,
    inproc,
    introspection,
    server_models,
)
from bench.procs import REPO


def machine() -> dict[str, str]:
    import grpc
    from google.protobuf.internal import api_implementation

    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "protobuf backend": api_implementation.Type(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
    }


def run(quick: bool, out: Path, parts: set[str]) -> dict[str, Any]:
    rounds = 3 if quick else 7
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "skipped": []}
    started = time.time()
    if "engine" in parts:
        counts = (10, 100, 1000, 10_000)
        evaluated, checked = inproc.engine_by_rules(
            counts, calls=300 if quick else 3000, rounds=rounds
        )
        results["engine"] = {"evaluate": evaluated, "check": checked}
        print("engine done", flush=True)
    if "identity" in parts:
        results["identity"] = inproc.identity_by_algorithm(
            calls=50 if quick else 300, rounds=rounds
        )
        results["full_check"] = inproc.full_check(calls=300 if quick else 3000, rounds=rounds)
        print("identity done", flush=True)
    if "cache" in parts:
        results["cache"] = inproc.decision_cache(calls=300 if quick else 2000, rounds=rounds)
        print("cache done", flush=True)
    if "introspection" in parts:
        results["introspection"] = introspection.cache_hit_vs_warm_jwt(
            calls=300 if quick else 3000, rounds=rounds
        )
        print("introspection done", flush=True)
    if "grpc" in parts:
        if h2load.available():
            results["grpc"] = grpc_load.compare(rounds=rounds, requests=2000 if quick else 10_000)
            print("grpc done", flush=True)
        else:
            results["skipped"].append("gRPC Check with h2load: h2load is not installed")
    if "e2e" in parts:
        if envoy_load.available():
            results["e2e"] = envoy_load.compare(
                rounds=2 if quick else 5,
                seconds=2 if quick else 5,
                latency_rate=200,
                latency_seconds=3 if quick else 8,
            )
            print("e2e done", flush=True)
        else:
            results["skipped"].append("end to end: Envoy or wrk is not installed")
    if "peers" in parts:
        if envoy_load.available():
            results["peers"] = envoy_load.peers(rounds=2 if quick else 5, seconds=2 if quick else 5)
            results["skipped"] += results["peers"]["skipped"]
            print("peers done", flush=True)
        else:
            results["skipped"].append("peers: Envoy or wrk is not installed")
    if "models" in parts:
        if envoy_load.available() and h2load.available():
            results["models"] = server_models.compare(
                rounds=2 if quick else 5,
                requests=2000 if quick else 6000,
                seconds=2 if quick else 4,
            )
            print("models done", flush=True)
        else:
            results["skipped"].append("server models: Envoy, wrk or h2load is not installed")
    if "http" in parts:
        if envoy_load.available():
            results["http_mode"] = http_mode.compare(
                rounds=2 if quick else 5, seconds=2 if quick else 5
            )
            print("http mode done", flush=True)
        else:
            results["skipped"].append("HTTP mode: Envoy or wrk is not installed")
    if "export" in parts:
        if envoy_load.available():
            results["export"] = export_load.compare(rounds=3 if quick else 7, seconds=3)
            print("export done", flush=True)
        else:
            results["skipped"].append("exported policy: Envoy or wrk is not installed")
    results["seconds"] = time.time() - started
    from bench.report import write

    write(results, out, command=" ".join(["python -m bench", *sys.argv[1:]]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the benches and write the report")
    r.add_argument("--quick", action="store_true", help="short rounds (about a minute)")
    r.add_argument("--out", type=Path, default=REPO / "docs/benchmarks.md")
    r.add_argument(
        "--parts",
        default="engine,identity,cache,introspection,grpc,e2e,peers,models,http,export",
        help="comma-separated subset",
    )
    args = parser.parse_args(argv)
    run(args.quick, args.out, set(args.parts.split(",")))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
