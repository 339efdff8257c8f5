"""`python -m bench run` changes docs/benchmarks.md only when asked, and the OPA-Envoy binary is
the user's to name (issue 25.11): no path outside the repository is looked at."""

from __future__ import annotations

import lzma
import re
import subprocess
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import opa
from bench.parts import Part

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"


# One part that measures nothing, so a run takes no time: what is tested is where it writes.
STUB = Part("stub", "stub", lambda: None, lambda size: {})


def _bench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str) -> Path:
    """`python -m bench run --quick --parts stub ARGV`, in process; the file it wrote."""
    monkeypatch.setattr(bench_main, "PARTS", (STUB,))
    assert bench_main.main(["run", "--quick", "--parts", "stub", *argv]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote "))


def test_a_run_writes_the_docs_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = DOCS.read_bytes()
    written = _bench(monkeypatch, capsys)
    assert written.read_text().startswith("# Benchmarks") and REPO not in written.parents
    written.unlink()
    assert DOCS.read_bytes() == before
    assert _bench(monkeypatch, capsys, "--out", str(tmp_path / "b.md")) == tmp_path / "b.md"
    assert (tmp_path / "b.md").read_text().startswith("# Benchmarks")
    assert DOCS.read_bytes() == before


def test_without_a_binary_the_bench_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(opa.ENV, raising=False)
    reason = opa.missing_reason()
    assert reason is not None and "--opa-envoy PATH" in reason and opa.ENV in reason
    assert "opa-envoy-plugin" in reason and "shared" not in reason
    monkeypatch.setenv(opa.ENV, "/nonexistent/opa")
    assert "/nonexistent/opa is not a file" in (opa.missing_reason() or "")


@pytest.mark.parametrize("packed", [False, True])
def test_the_named_binary_plain_or_xz_is_used(
    packed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = b"#!/bin/sh\necho opa\n"
    named = tmp_path / ("opa.xz" if packed else "opa")
    named.write_bytes(lzma.compress(program) if packed else program)
    monkeypatch.setenv(opa.ENV, str(named))
    assert opa.missing_reason() is None
    (tmp_path / "run").mkdir()
    binary = opa.unpack(tmp_path / "run")
    assert binary.read_bytes() == program
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "opa\n"


def test_nothing_points_at_a_directory_beside_the_repository() -> None:
    for path in (REPO / "README.md", DOCS, REPO / "bench" / "opa.py"):
        assert "../shared" not in path.read_text(encoding="utf-8"), path


def test_the_readme_and_the_http_mode_page_quote_the_benchmarks_ratios() -> None:
    """One source for a speed claim: the latest full run in docs/benchmarks.md."""
    bench = DOCS.read_text(encoding="utf-8")
    (http_grpc, http_empty) = re.findall(
        r"HTTP / gRPC: ([\d.]+x); HTTP / empty granian: ([\d.]+x)", bench
    )[0]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    page = (REPO / "docs" / "http-mode.md").read_text(encoding="utf-8")
    for text in (readme, page):
        quoted = set(re.findall(r"([\d.]+x)(?:-[\d.]+x)? the gRPC mode", text))
        assert quoted == {http_grpc}, quoted
    assert f"reaches {http_empty} the empty granian app" in page
