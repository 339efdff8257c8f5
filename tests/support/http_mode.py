"""The HTTP mode for end-to-end tests: the real HTTP door served by granian on a background
event loop, and an Envoy running the bootstrap `authz.envoy_http.http_bootstrap` emits.

    with HttpService(settings, HttpListener(trust_xfcc=True)) as service:
        envoy = HttpModeEnvoy(service.address, upstream, workdir, tls=...).start()
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from authz.app import App, build_app
from authz.config import Settings
from authz.envoy_bootstrap import BootstrapOptions, Endpoint, TlsFiles
from authz.envoy_http import http_bootstrap
from authz.http_server import HttpAuthorizationApp, HttpServers
from authz.wire.http import HttpListener

from .envoy import Envoy, EnvoyConfig, TlsConfig
from .ports import LOOPBACK, free_port
from .upstream import EchoUpstream


class HttpService:
    """`build_app(settings)` behind the HTTP door on a free loopback port, in this process."""

    def __init__(self, settings: Settings, listener: HttpListener) -> None:
        self.settings = settings
        self.listener = listener
        self.port = 0
        self.app: App | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: HttpServers | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    def start(self) -> HttpService:
        self.app = build_app(self.settings)
        self.app.keys.wait_ready(10.0)
        self._thread.start()
        last: OSError | None = None
        for _attempt in range(5):  # free_port is racy: retry on "address in use"
            self.port = free_port()
            handler = HttpAuthorizationApp(
                self.app.engine,
                self.settings.limits,
                self.listener,
                observers=self.app.service.observers,
            )
            self._servers = HttpServers([(handler, self.address)], self.settings.limits)
            try:
                self._run(self._servers.start())
                return self
            except OSError as error:
                last = error
        raise RuntimeError(f"the HTTP door did not start: {last}")

    def stop(self) -> None:
        if self._servers is not None:
            self._run(self._servers.stop())
            self._servers = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self.app is not None:
            self.app.close()
            self.app = None

    def __enter__(self) -> HttpService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _endpoint(address: str) -> Endpoint:
    host, _, port = address.rpartition(":")
    return Endpoint(host, int(port))


class HttpModeEnvoy(Envoy):
    """An Envoy running `http_bootstrap` (the config `authz envoy-config --http` emits)."""

    def __init__(
        self,
        authz_address: str,
        upstream: EchoUpstream,
        workdir: Path,
        *,
        tls: TlsConfig | None = None,
        path_prefix: str = "",
    ) -> None:
        super().__init__(EnvoyConfig(authz_address=authz_address, tls=tls), workdir)
        self._upstream = upstream
        self._path_prefix = path_prefix

    def bootstrap(self) -> dict[str, Any]:
        tls = self.config.tls
        options = BootstrapOptions(
            authz=(_endpoint(self.config.authz_address),),
            upstream=Endpoint(self._upstream.host, self._upstream.port),
            listen_address=LOOPBACK,
            listen_port=self.port,
            admin_port=self.admin_port,
            tls=(
                TlsFiles(str(tls.cert), str(tls.key), str(tls.client_ca))
                if tls is not None and tls.client_ca is not None
                else None
            ),
            authz_timeout_ms=2000,  # a shared machine: a slow check must not read as an outage
        )
        return http_bootstrap(options, path_prefix=self._path_prefix)
