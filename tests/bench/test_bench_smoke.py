"""The bench suite in miniature, so it never rots: a few hundred calls, no thresholds.

The h2load part runs only when h2load is installed; Envoy/wrk are left to `python -m bench run`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import grpc_load, h2load, inproc, introspection
from bench.report import write


def test_in_process_benches_and_report(tmp_path: Path) -> None:
    evaluated, checked = inproc.engine_by_rules((10, 1000), calls=50, rounds=2)
    identity = inproc.identity_by_algorithm(calls=5, rounds=1)
    full = inproc.full_check(calls=50, rounds=2)
    opaque = introspection.cache_hit_vs_warm_jwt(calls=20, rounds=1)
    assert set(checked) == {"10", "1000"} and "RS256 cold" in identity and len(full) == 2
    results = {
        "machine": {"nproc": "?"},
        "quick": True,
        "skipped": ["smoke"],
        "seconds": 0.0,
        "engine": {"evaluate": evaluated, "check": checked},
        "identity": identity,
        "full_check": full,
        "introspection": opaque,
        # The export layout's shape (bench/export_load.py `compare`), numbers made up.
        "export": {
            "throughput": {"envoy + export": [2.0], "envoy + jwt_authn + rbac": [2.0]},
            "median": {"envoy + export": 2.0, "envoy + jwt_authn + rbac": 2.0},
            "export_seconds": 0.5,
            "vs_hand_written": 1.0,
            "vs_authz_w1": 5.0,
        },
    }
    # The report wants the 10 and 10,000 rows for its target; the smoke run reuses 1,000.
    checked["10000"] = checked["1000"]
    out = tmp_path / "benchmarks.md"
    write(results, out, command="smoke")
    assert "## Targets" in out.read_text() and "export of 1,000 rules" in out.read_text()
    assert "introspection cache hit costs within 1.2x" in out.read_text()


@pytest.mark.skipif(not h2load.available(), reason="h2load is not installed")
def test_grpc_comparison_runs() -> None:
    comparison = grpc_load.compare(rounds=1, requests=200, clients=1, streams=4)
    assert set(comparison.rounds) == {"authz serve (realistic)", "empty servicer"}


def test_audit_log_bench_runs() -> None:
    from bench import audit_log

    result = audit_log.run(lines=300, base_count=100)
    assert result["lines"] == 300 and result["usage_lines_per_s"] > 0
