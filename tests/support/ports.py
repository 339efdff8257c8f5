"""Free loopback ports for test servers.

Asking the kernel for port 0 and closing the socket again is racy (another process can take the
port before our server binds it), so callers that start external processes retry on
"address in use" instead of trusting this to be exclusive.
"""

from __future__ import annotations

import contextlib
import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_runs(count: int, runs: int = 1) -> list[int]:
    """`runs` ports p, none of whose p .. p + count - 1 overlap, all free a moment ago (worker i
    of `authz serve --workers` takes p + i). Every port stays bound until all are picked, so two
    runs never come back the same."""
    with contextlib.ExitStack() as held:
        firsts: list[int] = []
        for _attempt in range(100 * runs):
            if len(firsts) == runs:
                return firsts
            first = free_port()
            if first + count > 65535:
                continue
            with contextlib.ExitStack() as run:
                try:
                    for port in range(first, first + count):
                        sock = run.enter_context(socket.socket())
                        sock.bind((LOOPBACK, port))
                except OSError:
                    continue
                held.enter_context(run.pop_all())
                firsts.append(first)
        if len(firsts) == runs:
            return firsts
    raise RuntimeError(f"no {runs} runs of {count} free ports")


def free_port_run(count: int) -> int:
    """A port p with p .. p + count - 1 all free a moment ago."""
    return free_port_runs(count)[0]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises ``TimeoutError`` after ``timeout`` seconds, so a server that never comes up fails the
    test instead of hanging it.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s: {last_error}")
