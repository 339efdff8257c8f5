"""The latency each authorizer adds at a fixed, moderate rate, side by side behind one Envoy.

h2load --rps sends `rate` requests a second (4 connections, one stream each) through Envoy
--concurrency 1 for each layout in turn, the order reversed every other round; each round's
p50 and p99 are kept and the report gives their medians, minus those of Envoy alone (the "added"
latency). The authorizers are pinned to one core (AUTHORIZER_CORE), Envoy and h2load to the
other, as in the peers part:

* `envoy alone`                  the baseline (a direct response, no authorization);
* `authz gRPC w1`                ext_authz gRPC to `authz serve --workers 1`;
* `authz HTTP w1`                ext_authz `http_service` to `authz serve --no-grpc --http-listen`;
* `export`                       the filters `authz export envoy` prints, Envoy deciding alone;
* `opa jwt`                      OPA-Envoy verifying the same RS256 token (when its binary is
                                 given: `--opa-envoy PATH` or the environment, see bench/opa.py);
* `empty sync-8`                 grpcio's sync server answering OK without looking (the floor of
                                 the gRPC door's server model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import envoy_load, export_load, fixtures, http_mode, opa
from bench.envoy_load import AUTHORIZER_CORE, FRONT_CORE, fixed_rate, percentile
from bench.grpc_load import authz_argv
from bench.procs import PYTHON, free_port, pinned, started, wait_port

BASELINE = "envoy alone"
QUANTILES = (0.5, 0.99)


def compare(*, rounds: int, seconds: float, rate: int = 500) -> dict[str, Any]:
    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    message = fixtures.check_request(token)
    one, front = AUTHORIZER_CORE, FRONT_CORE
    skipped: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="authz-bench-latency-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        policies = export_load.exportable_policies(tmp, key)
        listeners: dict[str, int] = {
            BASELINE: stack.enter_context(envoy_load.envoy(tmp, "alone", [], cores=front)),
        }
        ports = stack.enter_context(envoy_load.authz(tmp, policies, 1, message, cores=one))
        listeners["authz gRPC w1"] = stack.enter_context(
            envoy_load.envoy(tmp, "authz", ports, cores=front)
        )
        http_port = free_port()
        argv = [*authz_argv(policies, f"127.0.0.1:{free_port()}"), "--no-grpc"]
        argv += ["--http-listen", f"127.0.0.1:{http_port}"]
        log = tmp / "authz-http.log"
        proc = stack.enter_context(started(pinned(argv, one), log=log))
        wait_port(http_port, proc, log)
        listeners["authz HTTP w1"] = stack.enter_context(
            export_load.envoy_of(
                tmp, "http", lambda li, ad: http_mode.http_bootstrap(li, ad, http_port), cores=front
            )
        )
        filters = export_load.exported_filters(policies)
        listeners["export"] = stack.enter_context(
            export_load.envoy_of(
                tmp,
                "export",
                lambda li, ad: export_load.bootstrap_with(li, ad, filters),
                cores=front,
            )
        )
        reason = opa.missing_reason()
        if reason is None:
            binary = opa.unpack(tmp)
            port = stack.enter_context(
                opa.serve(tmp, binary, "jwt", [key], gomaxprocs=1, cores=one)
            )
            listeners["opa jwt"] = stack.enter_context(
                envoy_load.envoy(tmp, "authz", [port], cores=front)
            )
        else:
            skipped.append(f"latency: {reason}")
        empty_port = free_port()
        argv = [PYTHON, "-m", "bench", "serve", "model", "empty-sync-8", f"127.0.0.1:{empty_port}"]
        log = tmp / "empty.log"
        proc = stack.enter_context(started(pinned([*argv, "-"], one), log=log))
        wait_port(empty_port, proc, log)
        listeners["empty sync-8"] = stack.enter_context(
            envoy_load.envoy(tmp, "authz", [empty_port], cores=front)
        )

        names = list(listeners)
        for n in names:  # warm-up, and proof each layout answers 200 (wrk raises otherwise)
            envoy_load.wrk(listeners[n], token, seconds=1, cores=front)
        rounds_of: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                values = fixed_rate(listeners[n], token, tmp, rate=rate, seconds=seconds)
                rounds_of[n].append(
                    {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}
                )
    median = {
        n: {q: statistics.median(r[q] for r in per_round) for q in ("p50", "p99")}
        for n, per_round in rounds_of.items()
    }
    base = median[BASELINE]
    added = {
        n: {q: value - base[q] for q, value in m.items()}
        for n, m in median.items()
        if n != BASELINE
    }
    return {
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds_of,
        "median_us": median,
        "added_us": added,
        "skipped": skipped,
    }


def table(result: dict[str, Any]) -> list[str]:
    """The report's rows: added p50 and p99 per layout, in ms."""
    lines = [
        f"Latency added to Envoy alone at {result['rate']} req/s (h2load --rps, 4 connections; "
        f"median of rounds of {result['seconds']:g} s each):",
        "",
        "| layout | p50 added | p99 added | p50 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for n, m in result["median_us"].items():
        added = result["added_us"].get(n)
        shown = (
            ("", "")
            if added is None
            else (f"{added['p50'] / 1000:+.2f} ms", f"{added['p99'] / 1000:+.2f} ms")
        )
        p50, p99 = m["p50"] / 1000, m["p99"] / 1000
        lines.append(f"| {n} | {shown[0]} | {shown[1]} | {p50:.2f} ms | {p99:.2f} ms |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args(argv)
    result = compare(rounds=args.rounds, seconds=args.seconds, rate=args.rate)
    print("\n".join(table(result)))
    print(json.dumps(result["skipped"]))
    return 0
