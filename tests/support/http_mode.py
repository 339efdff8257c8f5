"""The HTTP mode for end-to-end tests: the real `authz serve --http-listen` process, and an Envoy
running the bootstrap the real `authz envoy-config --http` prints.

    with ServeProcess(policies, "--no-grpc", "--http-trust-xfcc", workers=2) as service:
        with HttpModeEnvoy(service, upstream, workdir, tls=...) as envoy:
            ...
        assert service.stop() == 0          # SIGTERM; every worker drained

Worker i listens on each port + i (authz.workers): HTTP, gRPC and admin. Ready when every
worker's admin /readyz answers 200. Everything is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .envoy import Envoy, EnvoyConfig, TlsConfig
from .ports import LOOPBACK, free_port_runs
from .service import REPO_ROOT, ServeBase
from .upstream import EchoUpstream


class ServeProcess(ServeBase):
    """`python -m authz serve` with `--http-listen` (and `--listen` unless `--no-grpc` is among
    `args`) and `--admin`, `workers` processes."""

    RETRY_ON = ("in use", "collide")

    def __init__(
        self,
        policies: str | os.PathLike[str],
        *args: str,
        workers: int = 1,
        ready_timeout: float = 60.0,
    ) -> None:
        self.policies = str(policies)
        self.args = args
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.http_port = self.grpc_port = self.admin_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)

    def http_address(self, worker: int = 0) -> str:
        return f"{LOOPBACK}:{self.http_port + worker}"

    def grpc_address(self, worker: int = 0) -> str:
        return f"{LOOPBACK}:{self.grpc_port + worker}"

    def admin_url(self, worker: int = 0) -> str:
        return f"http://{LOOPBACK}:{self.admin_port + worker}"

    def start(self) -> ServeProcess:
        self._start_serving()
        return self

    def _serve_args(self) -> list[str]:
        self.http_port, self.grpc_port, self.admin_port = free_port_runs(self.workers, 3)
        return [
            "--http-listen", self.http_address(), "--listen", self.grpc_address(),
            "--admin", f"{LOOPBACK}:{self.admin_port}", "--workers", str(self.workers),
            "--no-watch", *self.args,
        ]  # fmt: skip

    def ready(self, worker: int) -> int:
        """The status of worker `worker`'s /readyz (0: no answer)."""
        try:
            with urllib.request.urlopen(f"{self.admin_url(worker)}/readyz", timeout=1.0) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}: {self.log()[-3000:]}")
            if all(self.ready(i) == 200 for i in range(self.workers)):
                return
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {self.ready_timeout} s: {self.log()[-3000:]}")

    def metrics(self, worker: int = 0) -> str:
        with urllib.request.urlopen(f"{self.admin_url(worker)}/metrics", timeout=5.0) as answer:
            return str(answer.read().decode())

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait for the exit (SIGKILL after `timeout`); the exit code."""
        if self.process is None:
            return None
        self._sigterm(timeout)
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


class HttpModeEnvoy(Envoy):
    """An Envoy running what `authz envoy-config --http` prints for `service`: every worker's
    HTTP address an endpoint, health-checked on its admin /readyz."""

    def __init__(
        self,
        service: ServeProcess,
        upstream: EchoUpstream,
        workdir: Path,
        *,
        tls: TlsConfig | None = None,
        path_prefix: str = "",
    ) -> None:
        super().__init__(EnvoyConfig(authz_address=service.http_address(), tls=tls), workdir)
        self._service = service
        self._upstream = upstream
        self._path_prefix = path_prefix

    def bootstrap(self) -> dict[str, Any]:
        service, tls = self._service, self.config.tls
        argv = [
            sys.executable, "-m", "authz", "envoy-config", "--http",
            "--listen", str(self.port), "--listen-address", LOOPBACK,
            "--admin", str(self.admin_port),
            "--upstream", f"{self._upstream.host}:{self._upstream.port}",
            "--timeout-ms", "2000",  # a shared machine: a slow check must not read as an outage
            "--path-prefix", self._path_prefix,
        ]  # fmt: skip
        for worker in range(service.workers):
            argv += ["--authz", service.http_address(worker)]
            argv += ["--readyz-port", str(service.admin_port + worker)]
        if tls is not None and tls.client_ca is not None:
            argv += ["--mtls", "--server-cert", str(tls.cert), "--server-key", str(tls.key),
                     "--client-ca", str(tls.client_ca)]  # fmt: skip
        printed = subprocess.run(
            argv, cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=60
        )
        config: dict[str, Any] = yaml.safe_load(printed.stdout)
        return config
