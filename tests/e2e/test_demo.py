"""`authz demo` as a user runs it: start it, make the requests it prints, Ctrl-C, nothing left."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

READY_LINE = "Ctrl-C stops everything"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _pump(stream: object, lines: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        lines.put(raw.decode(errors="replace").rstrip("\n"))


def _read_until_ready(lines: queue.Queue[str], process: subprocess.Popen[bytes]) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert process.poll() is None, "demo exited early:\n" + "\n".join(seen)
            continue
        seen.append(line)
        if READY_LINE in line:
            return seen
    raise AssertionError("demo not ready in time:\n" + "\n".join(seen))


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the ppid is the 2nd field after the parenthesised command name
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _request(curl_line: str) -> int:
    words = shlex.split(curl_line)
    headers: dict[str, str] = {}
    url = ""
    i = 1
    while i < len(words):
        if words[i] == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif words[i].startswith("-"):
            i += 1
        else:
            url = words[i]
            i += 1
    assert url.startswith("http://127.0.0.1:"), curl_line  # loopback only
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], queue.Queue[str]]]:
    stderr = (tmp_path / "demo.stderr").open("wb")
    # As a user runs it, from any directory: the example files come from the repository.
    process = subprocess.Popen(
        [sys.executable, "-m", "authz", "demo", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        stderr.close()


def test_demo_requests_and_clean_shutdown(
    demo: tuple[subprocess.Popen[bytes], queue.Queue[str]],
) -> None:
    process, lines = demo
    output = _read_until_ready(lines, process)
    # The banner comes first (the echo upstream's own "listening on" line came before it).
    assert output[0] == "authz demo is running on loopback:", output[:2]

    pid_line = next(line for line in output if line.strip().startswith("pids"))
    pids = {name: int(pid) for name, pid in re.findall(r"(\w+)=(\d+)", pid_line)}
    assert set(pids) == {"authz", "envoy", "upstream"}
    assert _children_of(process.pid) <= set(pids.values())

    tried = 0
    for index, line in enumerate(output):
        match = re.search(r"expect (\d{3})", line)
        if match:
            curl = output[index + 1].strip()
            assert curl.startswith("curl ")
            assert _request(curl) == int(match.group(1)), curl
            tried += 1
    assert tried >= 4  # allowed, denied, no token, JWT
    assert any("Bearer" in line for line in output)

    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} ({pid}) still running"
    assert not _children_of(process.pid)
