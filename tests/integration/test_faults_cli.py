"""Issue 23, the commands as a user runs them: `-o` that cannot be written, and the policy
revision under every spelling of the directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_COMMANDS = (["schema"], ["envoy-config"], ["export", "envoy", str(REPO / "policies")])


def authz(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("command", DOCUMENT_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("where", ["directory", "missing-parent", "not-a-directory-parent"])
def test_output_that_cannot_be_written_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str], where: str
) -> None:
    (tmp_path / "file").write_text("")
    target = {
        "directory": tmp_path,
        "missing-parent": tmp_path / "nope" / "out.yaml",
        "not-a-directory-parent": tmp_path / "file" / "out.yaml",
    }[where]
    result = authz(*command, "-o", str(target))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"authz {command[0]}: cannot write {target}: "), result.stderr
    # Findings of the export may come first; the failure itself is one line.
    assert sum("cannot write" in line for line in result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", DOCUMENT_COMMANDS, ids=lambda c: c[0])
def test_output_that_can_be_written_still_is(tmp_path: Path, command: list[str]) -> None:
    target = tmp_path / "out.txt"
    result = authz(*command, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text()
