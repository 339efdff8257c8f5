"""The admin HTTP endpoint: `/metrics`, `/healthz` and `/readyz`, for Prometheus and Kubernetes,
and the decision page (authz.page) when one is given.

It runs on its own thread (stdlib `ThreadingHTTPServer`), apart from the gRPC event loop, so a
slow scrape can never delay a check, and a stuck event loop still shows in `/healthz` only if
the process is truly gone (liveness is "the process answers", nothing more). It should listen on
a private address: it tells which issuers and revisions are in force.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from authz import addresses

log = logging.getLogger("authz.admin")

# A page's answer: status, content type, body, extra headers.
PageAnswer = tuple[int, str, bytes, tuple[tuple[str, str], ...]]
# The decision page (authz.page.DecisionPages): the answer for a path it owns, else None.
Pages = Callable[[str, Mapping[str, str]], PageAnswer | None]
# Sent with every answer: no script runs and nothing loads from elsewhere, whatever a page holds
# (inline styles and inline SVG only); no framing, no sniffing, no referrer.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the service should get traffic, where it is in its life, and the JWT providers
    whose keys are not all fresh (issuer -> state), listed whether ready or not."""

    ready: bool
    phase: str = "serving"
    jwks: Mapping[str, str] = field(default_factory=dict)
    # The rate-limit counters (authz.limits): shown, never a reason to be unready (a Redis
    # that is down makes each process count locally; restarting the pod would not help).
    rate_limits: Mapping[str, str | float] = field(default_factory=dict)
    # Introspection providers whose last request failed (their tokens get 503): shown, never a
    # reason to be unready, for the same reason as a JWKS outage below.
    introspection: Mapping[str, str] = field(default_factory=dict)
    # With --export-envoy: whether Envoy's copy holds the set in force. Shown, never a reason
    # to be unready (this service decides right; the copy is retried: authz.envoy_files).
    envoy_export: Mapping[str, str] = field(default_factory=dict)


def readiness_check(
    phase: Callable[[], str],
    key_status: Callable[[], Mapping[str, str]],
    rate_limits: Callable[[], Mapping[str, str | float]] | None = None,
    introspection: Callable[[], Mapping[str, str]] | None = None,
    envoy_export: Callable[[], Mapping[str, str]] | None = None,
) -> Callable[[], Readiness]:
    """Ready exactly when `phase()` is "serving": `authz.server.Health.phase`, the very value
    gRPC health answers from, so /readyz and gRPC health cannot disagree.

    Key sets decide readiness only at start (the server serves once every provider has keys or
    the start-up grace ran out). After that, a provider without keys does not make the pod
    unready: its tokens are refused (401 `jwt_keys_unavailable`), every other route (mTLS,
    public, other issuers) is still served, and restarting or removing the pod would not bring
    the IdP back. Such providers are listed under `jwks` (and in the `authz_jwks_state` metric).
    """

    def check() -> Readiness:
        current = phase()
        keys = {issuer: status for issuer, status in key_status().items() if status != "ready"}
        limits = dict(rate_limits()) if rate_limits is not None else {}
        failing = dict(introspection()) if introspection is not None else {}
        export = dict(envoy_export()) if envoy_export is not None else {}
        return Readiness(current == "serving", current, keys, limits, failing, export)

    return check


# A client that has not finished its TLS handshake by then is dropped (it holds a thread).
TLS_HANDSHAKE_SECONDS = 10.0


class ServerTls(Protocol):
    """The admin endpoint's TLS (authz.tls.contexts.RotatingContext): the context for the next
    connection, and the count of clients refused at the handshake."""

    def get(self) -> ssl.SSLContext: ...

    def refused(self) -> None: ...


class AdminServer:
    """`/metrics`, `/healthz`, `/readyz` on `address`. `start()` binds (raising OSError when it
    cannot) and serves on a daemon thread; `close()` stops it and frees the port."""

    def __init__(
        self,
        address: str,
        *,
        metrics: Callable[[], bytes] | None = None,
        metrics_content_type: str = "text/plain; version=0.0.4; charset=utf-8",
        readiness: Callable[[], Readiness] = lambda: Readiness(True),
        tls: ServerTls | None = None,
        pages: Pages | None = None,
    ) -> None:
        self.address = address
        self.tls = tls
        self._pages = pages
        self._metrics = metrics
        self._content_type = metrics_content_type
        self._readiness = readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self) -> None:
        where = addresses.parse(self.address, allow_unix=False, port_zero=True)
        host, port = where.host, where.port
        handler = _handler_class(self)
        server_class = _V6Server if ":" in host else _Server
        server = server_class((host, port), handler)
        server.tls = self.tls
        server.daemon_threads = True  # a hung scraper must not keep the process alive
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="authz-admin",
            daemon=True,
        )
        self._thread.start()
        scheme = "https" if self.tls is not None else "http"
        url = f"{scheme}://{addresses.reachable(self.address)}"
        log.info("admin endpoint on %s (/metrics, /healthz, /readyz)", url)

    def close(self, timeout: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- responses ---------------------------------------------------------------------------

    def answer(self, target: str, headers: Mapping[str, str]) -> PageAnswer:
        """(status, content type, body, extra headers) for a GET of `target`."""
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/readyz", "/metrics") and self._pages is not None:
            page = self._pages(target, headers)
            if page is not None:
                return page
        return (*self.respond(path), ())

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path` (the probes and the metrics)."""
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            state = self._readiness()
            body: dict[str, Any] = {"ready": state.ready, "phase": state.phase}
            if state.jwks:
                body["jwks"] = dict(state.jwks)
            if state.rate_limits:
                body["rate_limits"] = dict(state.rate_limits)
            if state.introspection:
                body["introspection"] = dict(state.introspection)
            if state.envoy_export:
                body["envoy_export"] = dict(state.envoy_export)
            return (200 if state.ready else 503), "application/json", _json(body)
        if path == "/metrics" and self._metrics is not None:
            return 200, self._content_type, self._metrics()
        return 404, "text/plain; charset=utf-8", b"not found\n"


class _Server(ThreadingHTTPServer):
    """With `tls`, each connection's TLS handshake runs on that connection's own thread (a slow
    client never holds the accept loop), with the context of the certificates in force."""

    tls: ServerTls | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(TLS_HANDSHAKE_SECONDS)
        try:
            # Takes the socket over (the plain one is detached; the caller's close is a no-op).
            wrapped = self.tls.get().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.tls.refused()
            log.debug("admin TLS handshake with %s failed: %s", client_address, error)
            return
        try:
            wrapped.settimeout(None)
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _V6Server(_Server):
    address_family = socket.AF_INET6


def _json(value: object) -> bytes:
    return (json.dumps(value, sort_keys=True) + "\n").encode()


def _handler_class(admin: AdminServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "authz-admin"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, *, send_body: bool) -> None:
            try:
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, content_type, body, extra = admin.answer(self.path, headers)
            except Exception:
                log.exception("admin request %s failed", self.path)
                status, content_type, body, extra = 500, "text/plain; charset=utf-8", b"error\n", ()
            self.send_response(status)
            for name, value in (*SECURITY_HEADERS, *extra):
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes every few seconds would flood the log; keep them at debug.
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
