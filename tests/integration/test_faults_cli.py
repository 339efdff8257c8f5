"""Issue 23, the commands as a user runs them: `-o` that cannot be written, and the policy
revision under every spelling of the directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_COMMANDS = (
    ["schema"],
    ["envoy-config"],
    # The example mesh issues SVIDs alone: its allow rules on principals are exportable then.
    ["export", "envoy", str(REPO / "policies"), "--svid-only"],
)


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


def _revision(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"revision ([0-9a-f]{12})", result.stdout)
    assert found is not None, result.stdout
    return found.group(1)


def test_the_revision_is_the_same_under_every_spelling_and_on_every_copy(tmp_path: Path) -> None:
    """Issue 23.5: the revision is a digest of names relative to the policy directory and of
    contents, with a JWKS file, a subdirectory and an API key file in the set."""
    a = tmp_path / "r" / "a"
    (a / "partners").mkdir(parents=True)
    for name in ("shop.yaml", "platform.yaml", "demo-jwks.json"):
        (a / name).write_bytes((REPO / "policies" / name).read_bytes())
    for name in ("partners.yaml", "partners.keys.yaml"):
        (a / "partners" / name).write_bytes((REPO / "examples" / "partner-api" / name).read_bytes())
    copy = tmp_path / "elsewhere" / "deeper" / "policies"  # another replica's mount
    shutil.copytree(a, copy)
    (tmp_path / "r" / "b").symlink_to("a")
    spellings = [
        ("r/a", tmp_path),
        ("r/a/", tmp_path),
        ("./r/../r/a", tmp_path),
        ("r/b", tmp_path),
        ("a", tmp_path / "r"),
        (".", a),
        (str(a), REPO),
        (str(copy), REPO),
        ("policies", copy.parent),
    ]
    revisions = {
        spelling: _revision(authz("validate", spelling, cwd=cwd)) for spelling, cwd in spellings
    }
    assert len(set(revisions.values())) == 1, revisions
    # The revision still follows the content, the names and the key files.
    (a / "partners" / "partners.keys.yaml").write_text(
        (a / "partners" / "partners.keys.yaml").read_text() + "\n# changed\n"
    )
    changed = _revision(authz("validate", "r/a", cwd=tmp_path))
    (a / "partners" / "partners.yaml").rename(a / "partners" / "renamed.yaml")
    renamed = _revision(authz("validate", "r/a", cwd=tmp_path))
    assert len({*revisions.values(), changed, renamed}) == 3
