"""`python -m bench` is the one entry point: every measurement is a part of `run` or a tool
named in its table, and no other bench module runs as a script."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from bench.__main__ import SERVERS, TOOLS
from bench.parts import PARTS

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_only_the_entry_point_is_a_script() -> None:
    scripts = [
        path.name
        for path in sorted(BENCH.glob("*.py"))
        if path.name != "__main__.py" and '__name__ == "__main__"' in path.read_text()
    ]
    assert scripts == []


def test_no_private_name_crosses_modules() -> None:
    crossing = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench"):
                crossing += [f"{path.name}: {a.name}" for a in node.names if a.name[0] == "_"]
    assert crossing == []


def test_help_lists_every_part_and_tool() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert all(part.name in done.stdout for part in PARTS)
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True
    ).stdout
    assert all(name in listed for name in TOOLS)
    assert set(SERVERS) == {"empty-grpc", "empty-http", "model"}


def test_an_unknown_part_is_refused_before_anything_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--parts", "engine,nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown part(s): nope" in done.stderr
