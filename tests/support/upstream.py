"""The echo upstream (deploy/upstream/echo.py) served in-process, recording each request.

End-to-end tests need to see what Envoy actually forwarded (the raw path, headers the authz
service added or removed), so the server records every request and echoes it back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType

from deploy.upstream.echo import EchoHandler

from .ports import LOOPBACK


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the upstream saw it; header names are lower-cased, order kept."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [v for k, v in self.headers if k == wanted]


class _Handler(EchoHandler):
    """deploy/upstream/echo.py's handler (the one echo upstream), recording each request."""

    server: _EchoHTTPServer

    def received(self, header_list: list[tuple[str, str]], body: bytes) -> None:
        self.server.record(RecordedRequest(self.command, self.path, tuple(header_list), body))

    def log_message(self, format: str, *args: object) -> None:
        # Requests are recorded; writing each to stderr would only clutter pytest output.
        pass


class _EchoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._lock = threading.Lock()
        self.recorded: list[RecordedRequest] = []

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.recorded.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.recorded)

    def clear(self) -> None:
        with self._lock:
            self.recorded.clear()


class EchoUpstream:
    """The echo server on a free loopback port, served from a background thread.

    Use as a context manager::

        with EchoUpstream() as upstream:
            ...  # point Envoy at upstream.host, upstream.port
            assert upstream.requests[-1].path == "/allow/x"
    """

    def __init__(self, host: str = LOOPBACK) -> None:
        # Port 0 binds atomically here, so unlike external processes there is no port race.
        self._server = _EchoHTTPServer((host, 0))
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        return self._server.snapshot()

    def clear(self) -> None:
        """Forget the recorded requests."""
        self._server.clear()

    def start(self) -> EchoUpstream:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"echo-upstream-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
