"""`authz demo` outside a source checkout: one clear line, not a traceback (issue 25.3). The
demo run from any directory of a checkout is tests/e2e/test_demo.py."""

from __future__ import annotations

import socket
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


def test_a_port_another_demo_holds_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Envoy binds with SO_REUSEPORT: without this check a second `authz demo` would share
    port 10000 with the first, and each request would reach either one."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Envoy's listener
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert cli.main(["demo", "--envoy", "/bin/true", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"authz demo: 127.0.0.1:{port} is in use (another demo?): stop it, or pass --port 0 "
        "for a free port"
    )
