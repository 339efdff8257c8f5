"""The soak (tests/hostile/soak.py) in its short form: 10 s of mixed hostile traffic with faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("authz.wire.inbound", reason="authz.wire is not there yet")
pytest.importorskip(
    "authz._proto.envoy.service.auth.v3.external_auth_pb2", reason="no generated protos yet"
)

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.soak",
            "--seconds",
            "10",
            "--max-checks",
            "20000",
            "--clients",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "wrong answers:     0" in done.stdout
    assert "allows on error:   0" in done.stdout
