"""Every `authz` command line in README.md and docs/ is one the CLI accepts as written (issue 25:
"every documented command works as written"): its subcommand and flags exist. What the
commands then do is tested where each command is (the quick start runs for real in
tests/integration/test_quick_start.py); the console examples marked `<!-- console: runs -->`
are run here and must print what the page shows."""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path

import pytest

from authz import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```(?:sh|console|bash)\n(.*?)```", re.S)
_PREFIXES = ("$ authz ", "authz ", "./dev authz ", ".venv/bin/authz ")


def command_lines() -> list[tuple[str, str]]:
    """(where, the command after `authz`) for each documented command line."""
    found = []
    for path in DOCS:
        for block in _BLOCK.findall(path.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
                line = line.split(" > ", 1)[0].split(" | ", 1)[0]
                if line.startswith("./dev serve"):  # `./dev serve ARGS` is `authz serve ARGS`
                    line = "authz " + line.removeprefix("./dev ")
                prefix = next((p for p in _PREFIXES if line.startswith(p)), None)
                if prefix is None or "..." in line or "[" in line:
                    continue  # prose, elided (`...`) or a synopsis with optional parts
                found.append((path.name, line[len(prefix) :]))
    return found


LINES = command_lines()


def test_the_docs_show_commands() -> None:
    commands = {shlex.split(line)[0] for _, line in LINES}
    assert {"serve", "check", "validate", "lint", "test", "explain", "envoy-config"} <= commands


@pytest.mark.parametrize(("where", "line"), LINES, ids=[f"{w}: {line[:60]}" for w, line in LINES])
def test_the_command_line_parses(where: str, line: str) -> None:
    argv = [word.replace("$TOKEN", "t").replace("~", "/home/user") for word in shlex.split(line)]
    try:
        cli.parse(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `authz {line}` is refused by the CLI (exit {exit_.code})")


_INLINE = re.compile(r"`([^`\n]+)`")
_EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))


def python_commands() -> list[tuple[str, str]]:
    """(where, command) for each documented command that runs a repository script or module:
    in shell blocks, and inline (`... examples/demo-issuer/mint.py --sub alice`)."""
    found = []
    for path in [*DOCS, *_EXAMPLES]:
        text = path.read_text(encoding="utf-8")
        blocks = _BLOCK.findall(text)
        for line in (ln for block in blocks for ln in block.replace("\\\n", " ").splitlines()):
            if re.search(r"(^|[\s(])python3?\s", line):
                found.append((path.name, line.strip()))
        for span in _INLINE.findall(_BLOCK.sub("", text)):
            runs_script = re.search(r"(examples|deploy|bench|tests)/\S+\.py\s+-", span)
            if runs_script or re.match(r"python3? (-m tests\.|\S+\.py)", span):
                found.append((path.name, span))
    return found


def test_repository_scripts_run_with_the_interpreter_dev_installs_into() -> None:
    """`./dev` installs the dependencies into .venv: a script or test module run with another
    `python` (or as `examples/demo-issuer/mint.py ...`, which is not executable) fails with
    ModuleNotFoundError or 'Permission denied' (issue 25: every documented command works as
    written)."""
    commands = python_commands()
    assert any("mint.py" in command for _, command in commands)
    wrong = [
        (where, command)
        for where, command in commands
        if not re.search(r"\.venv/bin/python3? |\./dev ", command)
    ]
    assert not wrong, wrong


# A console block marked `<!-- console: runs -->` is run as written, from the repository root,
# and must print what the page shows (revisions aside; a `...` line stands for any lines).
_RUNS = re.compile(r"<!-- console: runs[^>]*-->\n```console\n(.*?)```", re.S)
_REVISION = re.compile(r"\b[0-9a-f]{12}\b")


def console_examples() -> list[tuple[str, str, str]]:
    """(where, the command after `$ authz`, the output shown) of each marked console block."""
    found = []
    for path in DOCS:
        for block in _RUNS.findall(path.read_text(encoding="utf-8")):
            for session in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, _, output = session.replace("\\\n", " ").partition("\n")
                found.append((path.name, command.removeprefix("authz "), output))
    return found


EXAMPLES = console_examples()


def test_the_authoring_guide_shows_runnable_output() -> None:
    assert {shlex.split(c)[0] for _, c, _ in EXAMPLES} >= {"validate", "lint", "test", "explain"}


@pytest.mark.parametrize(
    ("where", "command", "shown"), EXAMPLES, ids=[f"{w}: {c[:50]}" for w, c, _ in EXAMPLES]
)
def test_a_console_example_prints_what_the_page_shows(
    where: str,
    command: str,
    shown: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    with contextlib.suppress(SystemExit):
        cli.main(shlex.split(command))
    captured = capsys.readouterr()
    printed = _REVISION.sub("REV", captured.out + captured.err)
    pattern = "".join(
        r"(?:.*\n)*?" if line.strip() in ("...", "…") else re.escape(line) + r"\n"
        for line in _REVISION.sub("REV", shown).splitlines()
    )
    assert re.fullmatch(pattern, printed), f"{where}: `authz {command}` prints:\n{printed}"


def test_every_install_command_names_the_environment_dev_made() -> None:
    """`pip install 'authz[export]'` with some other `pip` installs into another Python, or
    fetches a package of that name from an index: the docs say `.venv/bin/pip install -e`."""
    installs = [
        (path.name, found)
        for path in DOCS
        for found in re.findall(r"\S*pip install[^`\n]*", path.read_text(encoding="utf-8"))
    ]
    assert len(installs) >= 2
    wrong = [(where, command) for where, command in installs if "/bin/pip install -" not in command]
    assert not wrong, wrong
