"""The real service as a process: `python -m authz serve` on a loopback port.

    with ServiceProcess(policies) as service:                    # ready when gRPC health SERVING
        raw = service.check_bytes(request.SerializeToString())   # bytes in, CheckResponse bytes out
    # on exit: SIGTERM, then SIGKILL after a bound

Everything listens on and talks to 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import grpc

from .ports import LOOPBACK, free_port

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
REPO_ROOT = Path(__file__).resolve().parents[2]


def spawn_serve(
    policies: str | os.PathLike[str], *args: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """`python -m authz serve --policies POLICIES ARGS...` started from the repo root; `popen`
    (stdout, stderr, env, ...) goes to subprocess.Popen as it is. Every test that runs the real
    service starts it here."""
    argv = [sys.executable, "-m", "authz", "serve", "--policies", str(policies), *args]
    return subprocess.Popen(argv, cwd=REPO_ROOT, **popen)


def is_serving(address: str) -> bool:
    """One gRPC health check on `address` (1 s bound): does it say SERVING?"""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def wait_serving(
    address: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    log: Callable[[], str],
    channel: grpc.Channel | None = None,
) -> None:
    """Until gRPC health on `address` says SERVING (asked over `channel`, a plaintext one by
    default; it is closed here). RuntimeError with the tail of `log()` if `process` exits
    first or `timeout` seconds pass."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with channel or grpc.insecure_channel(address) as opened:
        stub = health_pb2_grpc.HealthStub(opened)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode}: {log()[-3000:]}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"not SERVING after {timeout} s: {log()[-3000:]}")


class ServeBase:
    """What the serve wrappers share: `authz serve` started with its output in a temporary
    file, retried on fresh ports when a free port was taken meanwhile, killed on the way out."""

    # Lower-case words in a start error that mean "a port was taken": try other ports.
    RETRY_ON: tuple[str, ...] = ()
    policies: str
    process: subprocess.Popen[bytes] | None
    _log: IO[bytes]
    # Added to the process's environment (e.g. SSL_CERT_FILE for a JWKS server on the test CA).
    extra_env: Mapping[str, str] = MappingProxyType({})

    def _serve_args(self) -> list[str]:
        """Pick fresh ports; the serve args after `--policies DIR`."""
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _start_serving(self) -> None:
        last = ""
        for _attempt in range(5):  # free ports are racy: retry on "address in use"
            self.process = spawn_serve(
                self.policies,
                *self._serve_args(),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"},
            )
            try:
                self._wait_ready()
                return
            except RuntimeError as error:
                last = str(error)
                self._kill()
                if not any(word in last.lower() for word in self.RETRY_ON):
                    break
        raise RuntimeError(f"the service did not start: {last}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _sigterm(self, timeout: float) -> bool:
        """SIGTERM if still running, then wait up to `timeout`; SIGKILL if it has not exited
        by then. False when it took the SIGKILL."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                return False
        return True


class ServiceProcess(ServeBase):
    """`python -m authz serve --policies DIR --listen 127.0.0.1:PORT`, ready when its gRPC health
    says SERVING. Stopped with SIGTERM (then SIGKILL after a bound) on exit."""

    RETRY_ON = ("cannot listen", "address")

    def __init__(
        self,
        policies: str | os.PathLike[str],
        *,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 30.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.policies = str(policies)
        self.extra_args = extra_args
        self.extra_env = extra_env or {}
        self.ready_timeout = ready_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        # Lives as long as this object (closed in __exit__), so no `with` block.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._channel: grpc.Channel | None = None
        self._check: Any = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServiceProcess:
        self._start_serving()
        return self

    def _serve_args(self) -> list[str]:
        self.port = free_port()
        return ["--listen", self.address, *self.extra_args]

    def _wait_ready(self) -> None:
        assert self.process is not None
        wait_serving(self.address, self.process, self.ready_timeout, self.log)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )

    def raw_check(self, channel: grpc.Channel) -> Any:
        """A callable sending bytes as they are and returning the response bytes."""
        return channel.unary_unary(
            CHECK_METHOD, request_serializer=None, response_deserializer=None
        )

    def check_bytes(self, data: bytes, timeout: float = 10.0) -> bytes:
        if self._channel is None:
            self._channel = self.channel()
            self._check = self.raw_check(self._channel)
        return bytes(self._check(data, timeout=timeout))

    def peak_rss_kib(self) -> int:
        """VmHWM (peak resident set) of the service process, from /proc; 0 once it is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded); SIGKILL if it does not exit. Returns the exit code."""
        assert self.process is not None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if not self._sigterm(timeout):
            raise subprocess.TimeoutExpired(self.process.args, timeout)
        return int(self.process.returncode)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.terminate()
        finally:
            self._kill()
            self._log.close()
