"""A new user's first hour with `authz serve` (issue 25): the README's address forms, quiet logs
at the default level, and a misspelt flag that gets a suggestion."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from tests.support.ports import LOOPBACK, free_port
from tests.support.service import REPO_ROOT, spawn_serve, wait_serving

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(url: str) -> int:
    try:
        with _OPENER.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_colon_port_listens_on_every_interface_and_the_default_level_is_quiet() -> None:
    """`--listen :PORT` (as Envoy's and OPA's examples write it) for gRPC, HTTP and admin; with
    --http-listen, no granian warning or INFO line at the default level."""
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryFile() as log:
        process = spawn_serve(
            REPO_ROOT / "policies",
            *("--listen", f":{grpc_port}", "--http-listen", f":{http_port}"),
            *("--admin", f":{admin_port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def text() -> str:
                log.seek(0)
                return log.read().decode(errors="replace")

            wait_serving(f"{LOOPBACK}:{grpc_port}", process, 30.0, text)
            assert _status(f"http://{LOOPBACK}:{admin_port}/readyz") == 200
            # The HTTP door answers (a request without Envoy's original-path header: 400).
            assert _status(f"http://{LOOPBACK}:{http_port}/") == 400
            # The same spelling on the client side reaches it on this machine.
            checked = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "authz",
                    "check",
                    f"--authz=:{grpc_port}",
                    "--path=/debug/vars",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert checked.stdout.startswith("DENY 403 reason=no-debug-endpoints"), checked
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        output = text()
    assert f"serving on :{grpc_port}" in output
    # The admin URL is one to open (http://:PORT is not).
    assert f"admin http://127.0.0.1:{admin_port}" in output and "http://:" not in output
    assert "granian" not in output and "experimental" not in output, output
    assert all(" INFO authz" in line for line in output.splitlines() if " INFO " in line)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", "serve", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_readmes_workers_example_is_refused_for_the_reason_it_gives() -> None:
    """README: `--listen :9191 --admin :9192 --workers 2` would give worker 1 the admin port."""
    result = _serve("--listen", ":9191", "--admin", ":9192", "--workers", "2")
    assert result.returncode != 0
    assert ":9192 would be used by worker 0's --admin and worker 1's --listen" in result.stderr
    assert "is not HOST:PORT" not in result.stderr
