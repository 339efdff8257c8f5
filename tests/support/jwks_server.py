"""A real JWKS / OIDC discovery server on 127.0.0.1 (free port), in a thread.

    with JwksServer(keys=[key]) as server:
        provider = JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)
        server.rotate(new_key)          # serve other keys
        server.fail(503)                # answer errors ("down")
        server.garbage(b"not json")     # answer 200 with junk
        server.hold()                   # fetches block until server.release() (or close)
        server.redirect_to = url        # answer JWKS requests with a 302 to `url`
        server.wait_for_fetches(3)      # block (bounded) until 3 JWKS fetches were served
        server.fetches                  # JWKS requests seen; server.discovery_fetches likewise

`JwksServer(keys, tls=pki.server)` serves HTTPS (clients trust the test CA).

Paths: `/jwks.json` and `/.well-known/openid-configuration` (which points at `/jwks.json` and
names `server.issuer`). Any other path is 404. Everything is thread-safe.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.certs import CertPaths
from tests.support.tokens import SigningKey, jwks


class JwksServer:
    """See the module docstring."""

    def __init__(
        self,
        keys: Iterable[SigningKey] = (),
        *,
        issuer_path: str = "",
        tls: CertPaths | None = None,
    ) -> None:
        """`tls`: serve HTTPS with this certificate (the test PKI's server certificate, for
        127.0.0.1), as identity providers do."""
        self._lock = threading.Condition()
        self._body = json.dumps(jwks(*keys)).encode()
        self._status = 200
        self._released = threading.Event()
        self._released.set()
        self.fetches = 0
        self.discovery_fetches = 0
        self.discovery_issuer: str | None = None  # override what discovery claims as issuer
        self.redirect_to: str | None = None  # answer JWKS requests with a 302 to this URL
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False
        self._server.block_on_close = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        host, port = self._server.server_address[:2]
        self.base_url = f"{scheme}://{host!s}:{port}"
        self.issuer = self.base_url + issuer_path
        self.jwks_uri = self.base_url + "/jwks.json"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- what the server answers ---------------------------------------------------------

    def rotate(self, *keys: SigningKey) -> None:
        """Serve these keys (healthy, 200) from now on."""
        with self._lock:
            self._body = json.dumps(jwks(*keys)).encode()
            self._status = 200

    def serve_json(self, document: Any) -> None:
        """Serve this JSON document (healthy, 200)."""
        with self._lock:
            self._body = json.dumps(document).encode()
            self._status = 200

    def fail(self, status: int = 503) -> None:
        """Answer every request with `status` and no keys."""
        with self._lock:
            self._status = status

    def garbage(self, body: bytes = b"<html>surprise</html>") -> None:
        """Answer 200 with a body that is not a JWKS."""
        with self._lock:
            self._body = body
            self._status = 200

    def hold(self) -> None:
        """Make every following request wait (before answering) until `release()`."""
        self._released.clear()

    def release(self) -> None:
        """Let held requests answer."""
        self._released.set()

    # -- observing -------------------------------------------------------------------------

    def wait_for_fetches(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least `count` JWKS requests arrived (counted on arrival)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.fetches >= count, timeout)

    def close(self) -> None:
        """Stop serving and join every thread."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> JwksServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the handler -------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            location = None
            if path == "/jwks.json":
                self.fetches += 1
                body, status = self._body, self._status
                if self.redirect_to is not None:
                    location, status = self.redirect_to, 302
            elif path.endswith("/.well-known/openid-configuration"):
                self.discovery_fetches += 1
                document = {
                    "issuer": self.discovery_issuer or self.issuer,
                    "jwks_uri": self.jwks_uri,
                }
                body, status = json.dumps(document).encode(), self._status
            else:
                body, status = b"not found", 404
            self._lock.notify_all()
        # Bounded, so a forgotten release() cannot hang a test run.
        self._released.wait(30)
        if status != 200:
            body = b'{"error": "unavailable"}'
        try:
            handler.send_response(status)
            if location is not None:
                handler.send_header("Location", location)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (fetch timeout): nothing to do
