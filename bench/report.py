"""The report: docs/benchmarks.md (tables, ratios, targets) and a matplotlib chart beside it.

The "fast path log" section of the existing file is kept across runs: it is written by hand.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.timing import Result

LOG_START = "<!-- fast-path-log -->"
LOG_END = "<!-- /fast-path-log -->"


def _us(result: Result) -> str:
    return f"{result.median * 1e6:.1f}"


def _target(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def write(results: dict[str, Any], out: Path, *, command: str) -> None:
    lines: list[str] = [
        "# Benchmarks",
        "",
        f"Made by `{command}` (from the repository root, "
        f"{'quick' if results['quick'] else 'full'} run, {results['seconds']:.0f} s).",
        "",
    ]
    lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()) + ".", ""]
    lines += [
        "Every comparison ran side by side in that one invocation, alternating, several rounds; "
        "numbers are medians of rounds. The machine is shared (2 cores, other work running), so "
        "absolute numbers move between runs; ratios are what to read.",
        "",
    ]
    # The chart needs the bench extra (matplotlib); without it no chart is shown, and a chart
    # left by an earlier run is removed rather than shown beside numbers it does not plot.
    chart = out.with_suffix(".png")
    if _chart(results, chart):
        lines += [f"![benchmarks]({chart.name})", ""]
    else:
        chart.unlink(missing_ok=True)
    targets: list[str] = []

    if "engine" in results:
        ev, ch = results["engine"]["evaluate"], results["engine"]["check"]
        lines += [
            "## Policy engine alone (no gRPC)",
            "",
            "The realistic request as a `Request` (mTLS principal, no token), generated sets.",
            "",
            (
                "| rules | evaluate µs | evaluate/s | Engine.check µs | Engine.check/s | check vs "
                "10 rules |"
            ),
            "|---:|---:|---:|---:|---:|---:|",
        ]
        base = ch["10"].median
        for n in ev:
            lines.append(
                f"| {int(n):,} | {_us(ev[n])} | {ev[n].per_second:,.0f} | {_us(ch[n])} | "
                f"{ch[n].per_second:,.0f} | {ch[n].median / base:.2f}x |"
            )
        ratio = ch["10000"].median / base
        targets.append(
            f"| engine cost at 10,000 rules <= 2x at 10 | {ratio:.2f}x | {_target(ratio <= 2)} |"
        )
        lines.append("")

    if "identity" in results:
        idr: dict[str, Result] = results["identity"]
        base = idr["no token"].median
        lines += [
            "## Identity: a check's JWT cost",
            "",
            "`Engine.check` of the realistic request (1,000 rules) with a token; *cold* = a token "
            "never seen before (signature verified), *warm* = a verified-token cache hit.",
            "",
            "| variant | µs per check | added over no token (µs) |",
            "|---|---:|---:|",
        ]
        for name, res in idr.items():
            lines.append(f"| {name} | {_us(res)} | {(res.median - base) * 1e6:+.1f} |")
        lines.append("")
    if "full_check" in results:
        fc: dict[str, Result] = results["full_check"]
        a, b = fc["check, mTLS only"], fc["check, mTLS + warm RS256"]
        added = b.median - a.median
        lines += [
            (
                "Whole in-process check (`AuthorizationService.check`: CheckRequest in, "
                "CheckResponse out):"
            ),
            "",
            "| variant | µs per check |",
            "|---|---:|",
        ]
        lines += [f"| {n} | {_us(r)} |" for n, r in fc.items()]
        lines.append("")
        share = added / b.median
        extra = ""
        grpc_cost = None
        if "grpc" in results:
            grpc_cost = 1.0 / results["grpc"].median("authz serve (realistic)")
            extra = (
                f"; of a check served over gRPC ({grpc_cost * 1e6:.0f} µs at h2load's peak) it is "
                f"{added / grpc_cost:.1%}"
            )
        lines += [
            (
                f"A warm RS256 token adds {added * 1e6:.1f} µs: {share:.1%} of the in-process "
                f"check{extra}."
            ),
            "",
        ]
        ok = (added / grpc_cost <= 0.05) if grpc_cost else share <= 0.05
        targets.append(
            f"| warm-cache JWT adds <= 5% to a check | {added * 1e6:.1f} µs = "
            f"{(added / grpc_cost if grpc_cost else share):.1%} of a served check, {share:.1%} of "
            f"the in-process check | {_target(ok)} |"
        )

    if "grpc" in results:
        g = results["grpc"]
        a, e = g.median("authz serve (realistic)"), g.median("empty servicer")
        lines += [
            "## Check over gRPC (h2load)",
            "",
            "Both servers pinned to core 0 (`taskset`), h2load on core 1; 4 connections x 16 "
            "streams; the realistic CheckRequest (1,000 rules, RS256 bearer token, mTLS principal, "
            "typical headers) sent to both; the empty servicer answers a static OK without "
            "looking.",
            "",
            "| server | Check/s per round | median | vs empty |",
            "|---|---|---:|---:|",
        ]
        for n, rounds in g.rounds.items():
            lines.append(
                f"| {n} | {', '.join(f'{x:,.0f}' for x in rounds)} | {g.median(n):,.0f} | "
                f"{g.median(n) / e:.2f}x |"
            )
        lines.append("")
        targets.append(
            f"| realistic Check >= 0.9x the empty servicer | {a:,.0f} vs {e:,.0f} = {a / e:.2f}x | "
            f"{_target(a / e >= 0.9)} |"
        )

    if "e2e" in results:
        d = results["e2e"]
        med = d["median"]
        alone = med["envoy alone"]
        lines += [
            "## End to end through Envoy (wrk)",
            "",
            "wrk, 1 thread, 32 connections, the realistic request (RS256 bearer token) to a "
            "direct-response route; Envoy --concurrency 1; `authz serve --workers N`, each worker "
            "an endpoint of the ext_authz cluster. Not pinned (two workers need both cores; Envoy "
            "and wrk share them). The RBAC layout holds the same 1,000 rules but cannot verify the "
            "JWT (it only asks for the header).",
            "",
            "| layout | req/s per round | median | vs Envoy alone |",
            "|---|---|---:|---:|",
        ]
        for n, rounds in d["throughput"].items():
            lines.append(
                f"| {n} | {', '.join(f'{x:,.0f}' for x in rounds)} | {med[n]:,.0f} | "
                f"{med[n] / alone:.3f}x |"
            )
        lines.append("")
        if "envoy + authz w2" in med:
            ratio = med["envoy + authz w2"] / med["envoy + authz w1"]
            lines += [f"`--workers 2` / `--workers 1`: {ratio:.2f}x.", ""]
            targets.append(
                f"| --workers 2 >= 1.6x --workers 1 end to end | {med['envoy + authz w2']:,.0f} vs "
                f"{med['envoy + authz w1']:,.0f} = {ratio:.2f}x | {_target(ratio >= 1.6)} |"
            )
        if d["latency"]:
            lat = d["latency"]
            lines += [
                (
                    f"### Latency at a fixed {d['latency_rate']} req/s (h2load --rps, 4 "
                    "connections, h2c)"
                ),
                "",
                "| layout | requests | p50 µs | p90 µs | p99 µs |",
                "|---|---:|---:|---:|---:|",
            ]
            for n, v in lat.items():
                lines.append(
                    f"| {n} | {v['count']:.0f} | {v['p50']:.0f} | {v['p90']:.0f} | {v['p99']:.0f} |"
                )
            if "envoy + authz w1" in lat:
                a0, a1 = lat["envoy alone"], lat["envoy + authz w1"]
                lines.append(
                    "| **added by authz** | | "
                    + " | ".join(f"+{a1[q] - a0[q]:.0f}" for q in ("p50", "p90", "p99"))
                    + " |"
                )
            lines.append("")

    if "cache" in results:
        lines += _cache(results["cache"], targets)
    if "introspection" in results:
        lines += _introspection(results["introspection"], targets)
    if "peers" in results:
        lines += _peers(results["peers"], targets)
    if "models" in results:
        from bench.server_models import table

        lines += [
            "## Server model: today's `check` on grpc.aio vs grpcio's sync server",
            "",
            "`python -m bench server-models`: the same `build_app` service (check unchanged), each "
            "server one process pinned to core 0; direct = h2load (4 connections x 16 streams) on "
            "core 1; behind Envoy = wrk -c32 through Envoy --concurrency 1, both on core 1. "
            "`empty-*` answer a static OK.",
            "",
            *table(results["models"]),
            "",
        ]
    if "http_mode" in results:
        d = results["http_mode"]
        med = d["median"]
        lines += [
            "## HTTP mode vs gRPC mode through Envoy (`python -m bench http-mode`)",
            "",
            "Same wrk load as above; ext_authz `grpc_service` to `authz serve` (one process) vs "
            "`http_service` (authz.envoy_http) to `authz serve --no-grpc --http-listen` (one "
            "process) vs the same `http_service` to an empty granian RSGI app.",
            "",
            "| layout | req/s per round | median |",
            "|---|---|---:|",
        ]
        for n, rounds in d["throughput"].items():
            lines.append(f"| {n} | {', '.join(f'{x:,.0f}' for x in rounds)} | {med[n]:,.0f} |")
        lines += ["", f"HTTP / gRPC: {d['http/grpc']:.2f}x; HTTP / empty granian: "
                  f"{d['http/empty']:.2f}x.", ""]  # fmt: skip
        ratio = d["http/empty"]
        targets.append(
            f"| HTTP mode w1 >= 0.7x the empty granian app | {med['http w1']:,.0f} vs "
            f"{med['empty http']:,.0f} = {ratio:.2f}x | {_target(ratio >= 0.7)} |"
        )
        lat = next((v for k, v in d.items() if k.startswith("latency_us")), {})
        if lat:
            lines += ["| layout (fixed rate) | p50 µs | p90 µs | p99 µs |", "|---|---:|---:|---:|"]
            for n, v in lat.items():
                lines.append(f"| {n} | {v['p50']:.0f} | {v['p90']:.0f} | {v['p99']:.0f} |")
            lines.append("")
            if {"grpc w1", "http w1"} <= set(lat):
                h, g = lat["http w1"]["p99"], lat["grpc w1"]["p99"]
                targets.append(
                    f"| HTTP mode p99 <= gRPC mode p99 (fixed rate, same run) | {h:.0f} vs "
                    f"{g:.0f} µs | {_target(h <= g)} |"
                )

    if "export" in results:
        d = results["export"]
        med = d["median"]
        lines += [
            "## The policy set enforced by Envoy itself (authz export envoy)",
            "",
            "wrk as above; the same 1,000-rule set exported to jwt_authn + RBAC, against the "
            "same set written by hand as jwt_authn + RBAC, and against ext_authz to "
            "`authz serve --workers 1` (bench/export_load.py).",
            "",
            "| layout | req/s per round | median |",
            "|---|---|---:|",
        ]
        for n, rounds in d["throughput"].items():
            lines.append(f"| {n} | {', '.join(f'{x:,.0f}' for x in rounds)} | {med[n]:,.0f} |")
        cli = d.get("export_cli_seconds")
        lines += [
            "",
            f"Export of the 1,000-rule set: {d['export_seconds']:.2f} s in the process"
            + (
                f"; `authz export envoy` from start to exit: {cli:.2f} s (median of 3)."
                if cli
                else "."
            ),
            "",
        ]
        targets += [
            f"| exported >= 0.9x hand-written jwt_authn + RBAC | {d['vs_hand_written']:.2f}x | "
            f"{_target(d['vs_hand_written'] >= 0.9)} |",
            f"| exported >= 4x authz --workers 1 | {d['vs_authz_w1']:.2f}x | "
            f"{_target(d['vs_authz_w1'] >= 4)} |",
            f"| export of 1,000 rules < 1 s | {d['export_seconds']:.2f} s | "
            f"{_target(d['export_seconds'] < 1)} |",
            *(
                [
                    f"| `authz export envoy` of 1,000 rules < 1 s wall | {cli:.2f} s | "
                    f"{_target(cli < 1)} |"
                ]
                if cli
                else []
            ),
        ]

    if "latency" in results:
        lines += _latency(results["latency"], targets)

    for skipped in results["skipped"]:
        lines.append(f"Skipped: {skipped}.")
    lines += ["## Targets", "", "| target | measured | status |", "|---|---|---|", *targets, ""]
    lines += _kept_log(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def _cache(c: dict[str, Result], targets: list[str]) -> list[str]:
    lines = [
        "## Decision cache (in process)",
        "",
        "The realistic request (1,000 rules, RS256 token) with the decision cache and without it "
        "(*today*), alternating; a *miss* with a new path every call keeps the verified-token "
        "cache warm, so it shows what looking up and filling the decision cache adds.",
        "",
        "| variant | µs per check | vs today |",
        "|---|---:|---:|",
    ]
    pairs = [
        ("cache hit: Engine.check", "today: Engine.check, warm token"),
        ("cache miss: new path every call", "today: new path every call"),
        ("cache miss: new token every call", "today: new token every call"),
        ("cache hit: AuthorizationService.check", "today: AuthorizationService.check"),
    ]
    for variant, base in pairs:
        for name in (base, variant):
            ratio = c[name].median / c[base].median
            lines.append(f"| {name} | {_us(c[name])} | {ratio:.2f}x |")
    lines.append("")
    miss = c["cache miss: new path every call"].median / c["today: new path every call"].median
    targets.append(
        f"| a decision-cache miss costs no more than today's check | "
        f"{_us(c['cache miss: new path every call'])} vs {_us(c['today: new path every call'])} "
        f"µs = {miss:.2f}x | {_target(miss <= 1.05)} (5% noise allowance) |"
    )
    return lines


def _introspection(c: dict[str, Result], targets: list[str]) -> list[str]:
    jwt, hit = (
        c["warm JWT (RS256, verified-token cache)"],
        c["opaque token, introspection cache hit"],
    )
    ratio = hit.median / jwt.median
    targets.append(
        f"| an introspection cache hit costs within 1.2x of a warm JWT check | "
        f"{_us(hit)} vs {_us(jwt)} µs = {ratio:.2f}x | {_target(ratio <= 1.2)} |"
    )
    return [
        "## Token introspection (in process)",
        "",
        "`Engine.check` of the realistic request (1,000 rules, decision cache off for both) with "
        "an opaque token answered from the introspection cache vs a warm RS256 JWT.",
        "",
        "| variant | µs per check | vs warm JWT |",
        "|---|---:|---:|",
        f"| {jwt.name} | {_us(jwt)} | 1.00x |",
        f"| {hit.name} | {_us(hit)} | {ratio:.2f}x |",
        "",
    ]


def _peers(d: dict[str, Any], targets: list[str]) -> list[str]:
    med = d["median"]
    lines = [
        "## Peers at equal cores, behind the same Envoy (wrk)",
        "",
        "wrk -t1 -c32, the realistic request (RS256 bearer token); Envoy --concurrency 1. "
        "*1 core*: the authorizer pinned to core 1 (`authz serve --workers 1`, OPA-Envoy "
        "`GOMAXPROCS=1`, the empty servicers), Envoy and wrk pinned to core 0. *2 cores*: nothing "
        "pinned. `opa jwt` verifies the RS256 token with `io.jwt.decode_verify` (same JWKS, iss, "
        "aud; bench/opa.py), `opa path` checks method, host and path only.",
        "",
        "| layout | req/s per round | median | vs authz w1 |",
        "|---|---|---:|---:|",
    ]
    base = med.get("authz w1 (1 core)") or 1.0
    for n, rounds in d["throughput"].items():
        lines.append(
            f"| {n} | {', '.join(f'{x:,.0f}' for x in rounds)} | {med[n]:,.0f} | "
            f"{med[n] / base:.2f}x |"
        )
    lines.append("")
    empties = [med[k] for k in ("empty-aio (1 core)", "empty-sync-8 (1 core)") if k in med]
    if empties:
        ceiling = max(empties)
        targets.append(
            f"| behind Envoy, authz w1 >= 0.85x the fastest empty servicer | {base:,.0f} vs "
            f"{ceiling:,.0f} = {base / ceiling:.2f}x | {_target(base / ceiling >= 0.85)} |"
        )
    for variant, want in (("jwt", 1.5), ("path", 1.0)):
        key = f"opa {variant} GOMAXPROCS=1 (1 core)"
        if key in med:
            r = base / med[key]
            targets.append(
                f"| behind Envoy, authz w1 >= {want}x OPA-Envoy ({variant}) at GOMAXPROCS=1 | "
                f"{base:,.0f} vs {med[key]:,.0f} = {r:.2f}x | {_target(r >= want)} |"
            )
    return lines


def _latency(d: dict[str, Any], targets: list[str]) -> list[str]:
    from bench.latency import table

    lines = ["## Latency added at a fixed rate (`python -m bench latency`)", "", *table(d), ""]
    added = d["added_us"]
    if "opa jwt" in added and "authz gRPC w1" in added:
        ours, theirs = added["authz gRPC w1"], added["opa jwt"]
        for q in ("p50", "p99"):
            targets.append(
                f"| gRPC door: {q} added <= OPA-Envoy's (jwt) at {d['rate']} req/s | "
                f"{ours[q] / 1000:+.2f} vs {theirs[q] / 1000:+.2f} ms | "
                f"{_target(ours[q] <= theirs[q])} |"
            )
    return lines


def _kept_log(out: Path) -> list[str]:
    text = out.read_text() if out.exists() else ""
    if LOG_START in text and LOG_END in text:
        return [text[text.index(LOG_START) : text.index(LOG_END) + len(LOG_END)]]
    return [LOG_START, "## Fast path log", "", "(none yet)", LOG_END]


def _chart(results: dict[str, Any], path: Path) -> bool:
    """Draw the chart into `path`; False when matplotlib is not installed or nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [k for k in ("engine", "identity", "grpc", "e2e") if k in results]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "engine":
            ch = results["engine"]["check"]
            ax.bar(
                [f"{int(n):,}" for n in ch], [r.median * 1e6 for r in ch.values()], color="#4c72b0"
            )
            ax.set_title("Engine.check by rule count")
            ax.set_ylabel("µs per check")
        elif panel == "identity":
            idr = results["identity"]
            ax.barh(list(idr), [r.median * 1e6 for r in idr.values()], color="#55a868")
            ax.set_title("JWT: check µs (cold/warm)")
            ax.tick_params(axis="y", labelsize=7)
        elif panel == "grpc":
            g = results["grpc"]
            ax.bar(
                ["authz\n(realistic)", "empty\nservicer"],
                [g.median(n) for n in g.rounds],
                color="#c44e52",
            )
            ax.set_title("gRPC Check/s, one core")
            ax.set_ylabel("Check/s")
        else:
            med = results["e2e"]["median"]
            ax.barh(list(med), list(med.values()), color="#8172b2")
            ax.set_xscale("log")
            ax.set_title("Through Envoy, req/s (log)")
            ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


__all__ = ["statistics", "write"]
