"""A real RFC 7662 introspection endpoint over HTTPS on 127.0.0.1 (free port), in a thread.

    with IntrospectionServer(pki, secret="s3cret") as server:
        server.grant("tok-1", sub="alice", scope="cart")   # active, with these members
        server.revoke("tok-1")                              # inactive from now on
        server.slow(2.0)                                    # answers after 2 s
        server.fail(503)                                    # answers 503 ("down" at HTTP level)
        server.garbage(b"<html>")                           # answers 200 with junk
        server.requests                                     # introspection requests served
        server.stop()                                       # the port refuses connections

Only `POST /introspect` with `Authorization: Basic` for `client_id`/`secret`
(client_secret_basic) is answered; a wrong secret gets 401. Everything is thread-safe.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.certs import Pki


class IntrospectionServer:
    def __init__(self, pki: Pki, *, client_id: str = "authz", secret: str = "s3cret") -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, dict[str, Any]] = {}
        self._delay = 0.0
        self._status = 200
        self._garbage: bytes | None = None
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self.requests = 0
        self.seen_tokens: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.server.cert), str(pki.server.key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        port = self._server.server_address[1]
        self.endpoint = f"https://127.0.0.1:{port}/introspect"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def grant(self, token: str, **members: Any) -> None:
        members.setdefault("exp", int(time.time()) + 3600)
        with self._lock:
            self._tokens[token] = {"active": True, **members}

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def slow(self, seconds: float) -> None:
        with self._lock:
            self._delay = seconds

    def fail(self, status: int) -> None:
        with self._lock:
            self._status = status

    def garbage(self, body: bytes | None) -> None:
        with self._lock:
            self._garbage = body

    def heal(self) -> None:
        with self._lock:
            self._delay, self._status, self._garbage = 0.0, 200, None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        form = urllib.parse.parse_qs(handler.rfile.read(length).decode())
        with self._lock:
            self.requests += 1
            delay, status, garbage = self._delay, self._status, self._garbage
            token = form.get("token", [""])[0]
            self.seen_tokens.append(token)
            answer = self._tokens.get(token, {"active": False})
        if delay:
            time.sleep(delay)
        if handler.path != "/introspect":
            status = 404
        elif handler.headers.get("authorization") != self._basic:
            status = 401
        body = garbage if garbage is not None else json.dumps(answer).encode()
        if status != 200:
            body = b'{"error": "nope"}'
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout test)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> IntrospectionServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
