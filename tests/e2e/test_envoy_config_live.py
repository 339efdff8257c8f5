"""A live request through Envoy configured by `authz envoy-config`, in front of the real service.

allowed -> reaches the upstream (with the decision id header); denied -> 403; the service
stopped -> 503, never 200 (fail closed, and an outage is not mistaken for a deny).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.commands.demo import (
    EchoUpstream,
    find_envoy,
    free_port,
    start_authz,
    stop_process,
    wait_for_envoy,
    wait_for_port,
)

pytestmark = pytest.mark.e2e

POLICY = """\
rules:
  - name: public-reads
    action: allow
    to: [{methods: [GET], paths: ["/public/{**}"]}]
"""

# Loopback only, whatever the environment says about proxies.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Stack:
    base: str
    authz: subprocess.Popen[bytes]
    envoy: subprocess.Popen[bytes]
    access_log: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "public.yaml").write_text(POLICY, encoding="utf-8")
    echo = EchoUpstream().start()
    authz_port, listen_port, admin_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    log_file = (tmp_path / "envoy.log").open("wb")
    try:
        authz = start_authz(str(policies), authz_port)
        processes.append(authz)
        wait_for_port(authz_port, 30, authz)
        config = tmp_path / "envoy.yaml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "authz",
                "envoy-config",
                "--authz",
                f"127.0.0.1:{authz_port}",
                "--listen",
                str(listen_port),
                "--listen-address",
                "127.0.0.1",
                "--upstream",
                f"127.0.0.1:{echo.port}",
                "--admin",
                str(admin_port),
                "-o",
                str(config),
            ],
            check=True,
            timeout=60,
        )
        envoy = subprocess.Popen(
            [find_envoy(), "-c", str(config), "--disable-hot-restart", "-l", "warning"],
            stdout=log_file,
        )
        processes.append(envoy)
        wait_for_envoy(admin_port, 30, envoy)
        wait_for_port(listen_port, 30, envoy)
        yield Stack(f"http://127.0.0.1:{listen_port}", authz, envoy, tmp_path / "envoy.log")
    finally:
        for process in reversed(processes):
            stop_process(process)
        log_file.close()
        echo.stop()


def test_allowed_denied_and_outage(stack: Stack) -> None:
    status, body = http_get(
        f"{stack.base}/public/hello", {"x-authz-principal": "spoofed-by-client"}
    )
    assert status == 200
    seen = json.loads(body)
    assert seen["upstream"] == "echo"
    decision_id = seen["headers"].get("x-authz-decision-id")
    assert decision_id
    # A client-sent identity header never reaches the upstream.
    assert seen["headers"].get("x-authz-principal") != "spoofed-by-client"

    status, body = http_get(f"{stack.base}/private")
    assert status == 403
    assert b"echo" not in body

    stop_process(stack.authz)
    status, _ = http_get(f"{stack.base}/public/hello")
    assert status == 503

    # The access log links the request to the service's decision log by id.
    stop_process(stack.envoy)
    assert decision_id in stack.access_log.read_text(encoding="utf-8")


def test_path_tricks_are_checked_as_served(stack: Stack) -> None:
    # Envoy normalizes before ext_authz: /public/../private is checked (and would be served) as
    # /private; an encoded slash is rejected by Envoy itself.
    assert http_get(f"{stack.base}/public/../private")[0] == 403
    assert http_get(f"{stack.base}//public/x")[0] == 200
    assert http_get(f"{stack.base}/public/a%2Fb")[0] == 400
