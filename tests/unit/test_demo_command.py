"""`authz demo` outside a source checkout: one clear line, not a traceback (issue 25.3). The
demo run from any directory of a checkout is tests/e2e/test_demo.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz import cli
from authz.commands import demo


def test_without_the_repositorys_examples_it_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "SOURCE_TREE", tmp_path)  # an installed wheel: no examples
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--envoy", "/bin/true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("authz demo: policies not found beside the authz package")
    assert "pass --policies" in err


def test_a_flag_naming_a_missing_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--envoy", "/bin/true", "--echo", str(tmp_path / "nope.py")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"authz demo: --echo {tmp_path}/nope.py: no such file or directory"
    )


def test_the_defaults_are_the_repositorys_files() -> None:
    for relative in demo.EXAMPLES.values():
        assert (demo.SOURCE_TREE / relative).exists(), relative
