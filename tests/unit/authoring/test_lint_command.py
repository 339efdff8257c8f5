"""`authz lint` as a user runs it (issue 25.8): plain lint never runs the export, `--strict`
fails on any finding, `--list-codes` aligned, docs/authoring.md's table lists every code, and
counts in good English."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from authz.authoring.lint import CODES
from authz.cli import main

REPO = Path(__file__).resolve().parents[3]

# A rule Envoy's own filters cannot enforce (a header condition on :path), and nothing else.
NOT_EXPORTABLE = """\
hosts: [a.example]
authentication: {mtls: {trust_domains: [cluster.local]}}
rules:
  - name: tenant
    action: allow
    from: [{principals: ["spiffe://cluster.local/ns/a/sa/b"]}]
    to: [{paths: ["/t/{*}"]}]
    when: [{header: ":path", prefix: "/t/x"}]
"""


def _lint(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["lint", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def unexportable(tmp_path: Path) -> str:
    (tmp_path / "p.yaml").write_text(NOT_EXPORTABLE)
    return str(tmp_path)


def test_plain_lint_never_runs_the_export(
    unexportable: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = _lint(capsys, unexportable)
    monkeypatch.setitem(sys.modules, "authz.export", None)  # importing it now fails
    assert _lint(capsys, unexportable) == found
    assert "not-exportable" not in found[1]


def test_strict_fails_on_any_finding_exportability_too(
    unexportable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _lint(capsys, "--exportable", unexportable)
    assert code == 0 and "[tenant] not-exportable:" in out
    assert _lint(capsys, "--exportable", "--strict", unexportable)[0] == 1
    assert _lint(capsys, "--strict", str(REPO / "policies"))[0] == 1  # dry-run and audit rules
    clean = str(REPO / "examples" / "partner-api")
    assert _lint(capsys, "--strict", clean)[0] == 0


def test_counts_read_as_english(unexportable: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _lint(capsys, unexportable)[1].startswith("0 findings in 1 file (revision")
    out = _lint(capsys, str(REPO / "policies" / "shop.yaml"))[1]
    assert out.splitlines()[-1].startswith("1 finding in 1 file (revision")
    out = _lint(capsys, str(REPO / "policies"))[1]
    assert out.splitlines()[-1].startswith("2 findings in 2 files (revision")


def test_list_codes_is_aligned_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _lint(capsys, "--list-codes")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(CODES)
    starts = {len(line) - len(line[len(line.split()[0]) :].lstrip()) for line in lines}
    assert len(starts) == 1, lines  # every meaning starts in the same column


def test_the_docs_table_lists_exactly_the_codes() -> None:
    text = (REPO / "docs" / "authoring.md").read_text(encoding="utf-8")
    section = text.split("## `authz lint", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {code for row in rows for code in re.findall(r"`([a-z-]+)`", row.split("|")[1])}
    assert documented == set(CODES)
