"""The soak (tests/hostile/soak.py) in its short form: a few seconds of mixed hostile traffic with
faults (LONG_TESTS=1: 10 s, 20,000 checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.scale import scaled

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.soak",
            "--seconds",
            str(scaled(4, 10)),
            "--max-checks",
            str(scaled(8000, 20000)),
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
