"""`authz serve --workers 2`: two processes, one listener each, supervised; clean SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.workers import address_for_worker
from tests.support.ports import free_port_run
from tests.support.service import is_serving

REPO = Path(__file__).resolve().parents[2]


def test_worker_addresses() -> None:
    assert address_for_worker("127.0.0.1:9191", 0) == "127.0.0.1:9191"
    assert address_for_worker("127.0.0.1:9191", 1) == "127.0.0.1:9192"
    assert address_for_worker("[::1]:9191", 2) == "[::1]:9193"
    assert address_for_worker("unix:/run/authz.sock", 1) == "unix:/run/authz.1.sock"
    assert address_for_worker("unix:/run/authz", 3) == "unix:/run/authz.3"


def _wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _decision_id(address: str) -> str:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/healthz", "shop.example.com"
    with grpc.insecure_channel(address) as channel:
        answer = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)
    assert answer.status.code == 0
    return str(answer.dynamic_metadata.fields["decision_id"].string_value)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_two_workers_serve_and_stop_cleanly() -> None:
    port = free_port_run(2)
    addresses = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authz",
            "serve",
            "--policies",
            str(REPO / "policies"),
            "--listen",
            addresses[0],
            "--workers",
            "2",
            "--no-watch",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for address in addresses:
            _wait(lambda a=address: is_serving(a))
        # Each worker answers with its own random decision ids (UUIDv7, no shared counter).
        ids = [uuid.UUID(_decision_id(a)) for a in addresses]
        assert len(set(ids)) == 2 and all(i.version == 7 for i in ids)

        # A worker that dies is replaced, on the same address.
        workers = _children(supervisor.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        _wait(
            lambda: (
                len(_children(supervisor.pid)) == 2
                and set(_children(supervisor.pid)) != set(workers)
            )
        )
        _wait(lambda: is_serving(addresses[1]))

        workers = _children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
        for address in addresses:
            assert not is_serving(address)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)


def test_a_worker_that_cannot_bind_refuses_the_start() -> None:
    """Issue 23.7: worker 1's port is taken. Restarting it would fail the same way while worker
    0 serves half the endpoints: the start is refused, exit 2, as in one process."""
    port = free_port_run(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port + 1))
        squatter.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "authz",
                "serve",
                "--policies",
                str(REPO / "policies"),
                "--listen",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--no-watch",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or ": cannot" in line]
    assert errors == [
        f"authz [worker 1]: cannot listen on 127.0.0.1:{port + 1}: address already in use"
    ], result.stderr
    assert "restarting" not in result.stderr
    assert not is_serving(f"127.0.0.1:{port}")
