"""The demo "shop" upstream: answers every request with JSON of what it received.

Standard library only, so its image needs nothing but Python. Seeing the forwarded request
shows what the authz service changed: the x-authz-* headers it added, headers it removed, and
the path exactly as Envoy forwarded it.

    python echo.py --host 0.0.0.0 --port 8000
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

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        payload = (
            json.dumps(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
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
