"""`python -m bench`: the one entry point of the benchmarks.

    python -m bench run [--quick] [--parts a,b] [--out FILE]   every part side by side, the report
    python -m bench TOOL [args]                                one focused measurement (see --help)

The report goes to a temporary file unless `--out` names one: docs/benchmarks.md changes only
when asked (`--out docs/benchmarks.md`, after a full run). Parts that need a tool that is not
installed (h2load, wrk, Envoy, the OPA-Envoy binary) are skipped and the report says so and how
to get it. Nothing asserts a number: the report prints medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    audit_log,
    check_ab,
    empty_servicer,
    export_load,
    http_mode,
    latency,
    miss_cost,
    opa,
    profile,
    rate_limits,
    reload_stall,
    server_models,
    startup,
    tls,
    tracing,
)
from bench.parts import PARTS, Size

# The focused measurements: name -> its main(argv). Each prints what it measured.
TOOLS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "audit-log": (audit_log.main, "authz usage/replay throughput and memory on a big log"),
    "check-ab": (check_ab.main, "two checkouts' in-process check on a cache hit, A/B"),
    "export-load": (export_load.main, "the exported filters against hand-written ones"),
    "http-mode": (http_mode.main, "the HTTP door against the gRPC door and an empty app"),
    "latency": (latency.main, "latency added at a fixed rate: both doors, export, OPA-Envoy"),
    "miss-cost": (miss_cost.main, "CPU per check with and without the decision cache"),
    "profile": (profile.main, "py-spy profile of the gRPC door under load"),
    "rate-limits": (rate_limits.main, "the cost of rate limits, in process and with Redis"),
    "reload-stall": (reload_stall.main, "check latency while a big policy set reloads"),
    "server-models": (server_models.main, "grpc.aio against the sync server at thread counts"),
    "startup": (startup.main, "time from start to SERVING"),
    "tls": (tls.main, "plaintext against mTLS (and allowed clients) on the gRPC door"),
    "tracing": (tracing.main, "the cost of tracing per check"),
}

# The processes the parts start to measure against (not for people): kind -> serve(argv).
SERVERS: dict[str, Callable[[list[str]], None]] = {
    "empty-grpc": empty_servicer.serve,  # ADDRESS
    "empty-http": http_mode.serve_empty,  # ADDRESS
    "model": server_models.serve,  # MODEL ADDRESS POLICIES
}


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
    size = Size(quick)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "skipped": []}
    started = time.time()
    for part in PARTS:
        if part.name not in parts:
            continue
        missing = part.missing()
        if missing is not None:
            results["skipped"].append(f"{part.title}: {missing}")
            continue
        for key, value in part.run(size).items():
            results[key] = value
            if isinstance(value, dict):  # a part that ran but left a peer out says why
                results["skipped"] += value.get("skipped", [])
        print(f"{part.name} done", flush=True)
    results["seconds"] = time.time() - started
    from bench.report import write

    write(results, out, command=" ".join(["python -m bench", *sys.argv[1:]]))
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return TOOLS[argv[0]][0](argv[1:])
    if argv and argv[0] == "serve" and len(argv) > 1 and argv[1] in SERVERS:
        SERVERS[argv[1]](argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="focused measurements (python -m bench TOOL --help):\n"
        + "\n".join(f"  {name:14} {about}" for name, (_, about) in TOOLS.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the benches and write the report")
    r.add_argument("--quick", action="store_true", help="short rounds (about a minute)")
    r.add_argument(
        "--out",
        type=Path,
        help="write the report here, e.g. docs/benchmarks.md after a full run (default: a "
        "temporary file; the docs change only when asked)",
    )
    r.add_argument(
        "--opa-envoy",
        metavar="PATH",
        help=f"the OPA-Envoy binary (or an .xz of it) for the peers part (default: ${opa.ENV})",
    )
    r.add_argument(
        "--parts",
        default=",".join(part.name for part in PARTS),
        help="comma-separated subset of: " + ", ".join(part.name for part in PARTS),
    )
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - {part.name for part in PARTS}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if args.opa_envoy:
        os.environ[opa.ENV] = args.opa_envoy  # bench.opa reads it there, in this process
    if {"peers", "latency"} & set(args.parts.split(",")) and opa.missing_reason():
        print(opa.missing_reason(), file=sys.stderr)
    out = args.out or report_path()
    run(args.quick, out, set(args.parts.split(",")))
    print(f"wrote {out}")
    return 0


def report_path() -> Path:
    """A fresh temporary file for a report nobody asked to keep in the repository."""
    handle, name = tempfile.mkstemp(prefix="authz-bench-", suffix=".md")
    os.close(handle)
    return Path(name)


if __name__ == "__main__":
    raise SystemExit(main())
