"""An HTTP echo upstream: answers every request with JSON describing what it received.

End-to-end tests need to see what Envoy actually forwarded (the raw path, headers the authz
service added or removed), so the server records every request and echoes it back.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from .ports import LOOPBACK

_MAX_BODY = 1 << 20


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


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so Envoy can keep its upstream connections open; every answer has a length.
    protocol_version = "HTTP/1.1"
    server: _EchoHTTPServer

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the empty line that ends the message.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""

    def _echo(self) -> None:
        body = self._read_body()
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=tuple((k.lower(), v) for k, v in self.headers.items()),
            body=body,
        )
        self.server.record(record)
        headers: dict[str, str] = {}
        for key, value in record.headers:
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        payload = json.dumps(
            {
                "method": record.method,
                "path": record.path,
                "headers": headers,
                "header_list": [list(h) for h in record.headers],
                "body": body.decode("utf-8", "replace"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

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
