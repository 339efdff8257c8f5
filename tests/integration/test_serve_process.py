"""`authz serve` as an operator runs it: start-up line, listen errors, workers, logs, limits.

Every test runs the real process (`python -m authz serve`) on loopback; every wait is bounded,
and every process is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import grp
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from tests.support import service
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
BOUND = 30.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    return target


def start(
    args: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        preexec_fn=preexec,
    )


def wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes], count: int = 1) -> str:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if len(re.findall(pattern, text)) >= count:
            return text
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the log: {log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(BOUND)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return int(process.returncode)


def wait_serving(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until gRPC health on `address` says SERVING (bounded)."""
    service.wait_serving(address, process, BOUND, lambda: log.read_text(errors="replace"))


@contextmanager
def serving(args: list[str], log: Path, **options: object) -> Iterator[subprocess.Popen[bytes]]:
    """`authz serve ARGS` until gRPC health on its first --listen address says SERVING."""
    process = start(args, log, **options)  # type: ignore[arg-type]
    try:
        wait_serving(args[args.index("--listen") + 1], process, log)
        yield process
    finally:
        stop(process)


def run(*args: str, timeout: float = BOUND) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(address: str) -> external_auth_pb2.CheckResponse:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = "spiffe://cluster.local/ns/shop/sa/frontend"
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/api/orders", "shop.example.com"
    with grpc.insecure_channel(address) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        answer: external_auth_pb2.CheckResponse = stub.Check(request, timeout=10)
        return answer


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# -- start-up ---------------------------------------------------------------------------------


def test_one_line_says_what_is_served(policies: Path, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}"]
    with serving([*args, "--admin", f"127.0.0.1:{admin}"], log) as process:
        text = wait_for(log, r"serving on ", process)
    lines = [line for line in text.splitlines() if "serving on" in line]
    assert len(lines) == 1, text
    assert re.search(
        rf"serving on 127\.0\.0\.1:{port}, admin http://127\.0\.0\.1:{admin}: "
        r"policy revision [0-9a-f]+, 9 rules from ",
        lines[0],
    ), lines[0]


@pytest.mark.parametrize("flag", ["--listen", "--admin"])
def test_a_busy_address_is_one_clear_line_and_exit_2(
    policies: Path, tmp_path: Path, flag: str
) -> None:
    with busy_port() as port:
        other = free_port()
        addresses = {"--listen": f"127.0.0.1:{other}", "--admin": f"127.0.0.1:{other}"}
        addresses[flag] = f"127.0.0.1:{port}"
        result = run(
            "serve", "--policies", str(policies), *[a for kv in addresses.items() for a in kv]
        )
    assert result.returncode == 2, result.stderr
    assert f"authz: cannot listen on 127.0.0.1:{port}: address already in use\n" in result.stderr
    assert "Traceback" not in result.stderr and "add_port.cc" not in result.stderr


def test_an_unbindable_address_says_why(policies: Path, tmp_path: Path) -> None:
    result = run("serve", "--policies", str(policies), "--listen", "unix:/nonexistent/d/a.sock")
    assert result.returncode == 2
    assert "authz: cannot listen on unix:/nonexistent/d/a.sock: the directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"authz \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_explain_into_a_closed_pipe_is_not_an_error(policies: Path) -> None:
    command = [sys.executable, "-m", "authz", "explain", str(policies), "--path", "/admin/x"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # `| head -c 0`: the reader is gone before the first line is written
        stderr = p.stderr.read().decode()
        code = p.wait(BOUND)
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr
    assert code == 0


# -- workers ----------------------------------------------------------------------------------


def test_colliding_worker_addresses_are_refused_before_starting(policies: Path) -> None:
    port = free_port()
    result = run(
        "serve", "--policies", str(policies), "--workers", "2",
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{port + 1}",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert (
        f"127.0.0.1:{port + 1} would be used by worker 0's --admin and worker 1's --listen"
        in result.stderr
    )
    assert "worker 0 started" not in result.stderr


def _worker_pid(supervisor: int, index: int) -> int | None:
    """The pid of the supervisor's child that runs worker `index`, or None."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AUTHZ_WORKER_INDEX={index}".encode() in environ:
            return int(pid)
    return None


def test_a_worker_that_keeps_dying_is_given_up_on(policies: Path, tmp_path: Path) -> None:
    """Worker 1 is killed as soon as it starts, again and again: the supervisor restarts it,
    then gives up, stops every worker and exits 1. (A worker that cannot bind is not a crash:
    tests/integration/test_workers.py.)"""
    log = tmp_path / "stderr.log"
    port = free_port()
    process = start(
        ["--policies", str(policies), "--workers", "2", "--listen", f"127.0.0.1:{port}"], log
    )
    killed: set[int] = set()
    try:
        deadline = time.monotonic() + 4 * BOUND
        while process.poll() is None and time.monotonic() < deadline:
            pid = _worker_pid(process.pid, 1)
            if pid is not None and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        code = process.wait(BOUND)
    finally:
        stop(process)
    text = log.read_text()
    assert code == 1, text
    assert len(killed) == 5
    assert "worker 1 exited with -9, 5 times in a row" in text and "giving up" in text, text


def test_every_log_line_names_its_worker(policies: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    process = start(args, log)
    try:
        wait_for(log, r"serving on ", process, count=2)
    finally:
        assert stop(process) == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert re.match(r"^\S+Z \w+ [\w.]+ \[(worker [01]|supervisor)\]: ", line), line
    assert any("[worker 1]: serving on" in line and "worker 1 of 2" in line for line in lines)


# -- logs -------------------------------------------------------------------------------------


def test_json_logs_with_utc_timestamps(policies: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{free_port()}"]
    with serving([*args, "--log-format", "json"], log) as process:
        wait_for(log, r"serving on ", process)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(e["message"].startswith("serving on") for e in entries)
    for entry in entries:
        assert TIMESTAMP.match(entry["time"]), entry
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR") and entry["logger"]


def test_text_logs_with_utc_timestamps(policies: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{free_port()}"]
    with serving(args, log, env={"TZ": "America/New_York"}) as process:
        wait_for(log, r"serving on ", process)
    for line in log.read_text().splitlines():
        assert TIMESTAMP.match(line.split(" ", 1)[0]), line


def test_watchfiles_info_lines_are_off(policies: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{free_port()}"]
    with serving(args, log) as process:
        wait_for(log, r"watching ", process)
        time.sleep(0.5)  # let the watcher settle before the change (not an assertion on time)
        shop = policies / "shop.yaml"
        shop.write_text(shop.read_text() + "\n# touched\n")
        wait_for(log, r"policies reloaded|unchanged", process)
    text = log.read_text()
    assert "change detected" not in text and not re.search(r" watchfiles[\w.]*: ", text), text


# -- configuration ----------------------------------------------------------------------------


def test_a_misspelt_environment_variable_is_refused(policies: Path) -> None:
    env = {**os.environ, "AUTHZ_POLICIES": str(policies), "AUTHZ_LOG_LEVLE": "debug"}
    env["AUTHZ_SERVICE_HOST"] = "10.0.0.1"  # a Kubernetes service link: ignored
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve"],
        cwd=REPO, capture_output=True, text=True, timeout=BOUND, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "environment variable AUTHZ_LOG_LEVLE: unknown setting; did you mean 'AUTHZ_LOG_LEVEL'?"
        in result.stderr
    )
    assert "AUTHZ_SERVICE_HOST" not in result.stderr


def test_unix_socket_mode_and_group(policies: Path, tmp_path: Path) -> None:
    groups = [g for g in grp.getgrall() if g.gr_gid != os.getegid()]
    if os.geteuid() != 0:
        groups = [g for g in groups if g.gr_gid in os.getgroups()]
    if not groups:
        pytest.skip("no second group this user may give a file to")
    group = groups[0]
    path = tmp_path / "authz.sock"
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"unix:{path}"]
    with serving([*args, "--socket-mode", "0660", "--socket-group", group.gr_name], log):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == group.gr_gid
        assert check(f"unix:{path}").HasField("ok_response")


# -- file descriptors and idle connections ----------------------------------------------------


def _lower_soft_nofile() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def _raw_connections(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    opened = []
    for _ in range(count):
        connection = stack.enter_context(socket.create_connection(("127.0.0.1", port), 10))
        opened.append(connection)
    return opened


def test_connections_without_a_handshake_are_closed(policies: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}"]
    with serving([*args, "--handshake-timeout", "1"], log), ExitStack() as stack:
        (silent,) = _raw_connections(port, 1, stack)  # never sends the HTTP/2 preface
        silent.settimeout(BOUND)
        while silent.recv(4096):  # the server's SETTINGS frame, then end of stream
            pass


def test_1100_idle_connections_do_not_block_a_check(policies: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"the hard open file limit {hard} is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ours: 1,100 client sockets
    port = free_port()
    log = tmp_path / "stderr.log"
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}"]
    try:
        with serving(args, log, preexec=_lower_soft_nofile), ExitStack() as stack:
            assert re.search(r"open file limit raised from 1024 to \d+", log.read_text())
            _raw_connections(port, 1100, stack)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert check(f"127.0.0.1:{port}").HasField("ok_response")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
