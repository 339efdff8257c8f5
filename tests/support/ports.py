"""Free loopback ports for test servers.

The kernel's own free ports (bind to port 0) come from its ephemeral range, the same range it
takes the local port of every outgoing connection from: between our asking and the server's
bind, any client connection on the machine (the test's own gRPC channels, Redis clients, a
parallel run) could take the port. So ports are handed out here from just below that range,
where the kernel never hands out ports by itself: one counter per process, starting at a random
place, skipping ports something is bound to. A port is given out once per process (until the
counter wraps around, thousands of ports later), so two servers of one run never race for one.
Processes of other runs on the same machine could still pick the same port in the same instant;
callers that start external processes retry on "address in use" for that.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

LOOPBACK = "127.0.0.1"

_SPAN = 12_000  # ports below the ephemeral range handed out here


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_LOW = max(1024, _ephemeral_low() - _SPAN)
_HIGH = _ephemeral_low()  # exclusive
_lock = threading.Lock()
_next = random.SystemRandom().randrange(_LOW, _HIGH)  # not the test-seeded `random`


def _reseed() -> None:
    global _next
    _next = random.SystemRandom().randrange(_LOW, _HIGH)


os.register_at_fork(after_in_child=_reseed)  # a forked child does not walk its parent's ports


def _bindable(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _take(count: int, host: str) -> int:
    """The first of `count` consecutive ports from the counter, each bindable now."""
    global _next
    with _lock:
        for _attempt in range(_HIGH - _LOW):
            first = _next
            if first + count > _HIGH:
                _next = _LOW
                continue
            _next = first + count
            if all(_bindable(port, host) for port in range(first, first + count)):
                return first
    raise RuntimeError(f"no run of {count} free ports in {_LOW}-{_HIGH - 1}")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago and that no other caller in
    this process was given (outside the kernel's ephemeral range)."""
    return _take(1, host)


def free_port_runs(count: int, runs: int = 1) -> list[int]:
    """`runs` ports p, none of whose p .. p + count - 1 overlap, all free a moment ago (worker i
    of `authz serve --workers` takes p + i); from the counter, so no two runs are the same."""
    return [_take(count, LOOPBACK) for _ in range(runs)]


def free_port_run(count: int) -> int:
    """A port p with p .. p + count - 1 all free a moment ago."""
    return _take(count, LOOPBACK)


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
