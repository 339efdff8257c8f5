"""The demo "shop" upstream: answers every request with JSON of what it received.

Standard library only, so its image needs nothing but Python. Seeing the forwarded request
shows what the authz service changed: the x-authz-* headers it added, headers it removed, and
the path exactly as Envoy forwarded it.

    python echo.py --host 0.0.0.0 --port 8000

The one echo upstream: docker-compose runs it, `authz demo` runs it, and the end-to-end tests
(tests/support/upstream.py) serve this handler and record what `received` is given.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_MAX_BODY = 1 << 20


class EchoHandler(BaseHTTPRequestHandler):
    """Echo method, raw path, headers and body (up to 1 MiB) as JSON."""

    # HTTP/1.1 so Envoy can reuse upstream connections; every response carries a length.
    protocol_version = "HTTP/1.1"
    server_version = "shop-echo"

    def received(self, header_list: list[tuple[str, str]], body: bytes) -> None:
        """Called with each request (header names lower-cased, in order); for subclasses."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    # Skip trailers up to the empty line that ends the message.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunk = self.rfile.read(length)
                size += len(chunk)
                if size <= _MAX_BODY:
                    chunks.append(chunk)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""

    def _echo(self) -> None:
        body = self._read_body()
        header_list = [(k.lower(), v) for k, v in self.headers.items()]
        self.received(header_list, body)
        headers: dict[str, str] = {}
        for key, value in header_list:
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        payload = (
            json.dumps(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "header_list": [list(h) for h in header_list],
                    "body": body.decode("utf-8", "replace"),
                },
                indent=2,
            ).encode()
            + b"\n"
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    server.daemon_threads = True
    # `docker stop` sends SIGTERM; exit promptly instead of waiting for the kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
