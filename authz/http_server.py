"""The HTTP authorization server: granian (RSGI) on the service's own event loop.

Every check goes wire.http -> engine -> wire.http through the same checkpoint as the gRPC
door's (`authz.checkpoint`: timing, the deny-on-exception guard, observers, tracing).

Why granian, embedded: measured behind Envoy (docs/benchmarks.md, issue 14) an empty RSGI app
answers several times faster than an empty grpc.aio servicer, and its RSGI interface is ~1.5x
its own ASGI one on an empty app. Embedded, it runs in this process's event loop beside the gRPC
server, one Rust I/O thread, no processes of its own: `authz serve --workers N` stays the one
process model (each worker binds its own address, `authz.workers.address_for_worker`).
Request bodies are never read (the check needs none); granian's HTTP/1 buffer bounds what a
client can make it hold, and a slow client is cut by the header read timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from granian.constants import Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.server.embed import Server

from authz import addresses
from authz.checkpoint import Checkpoint, Observer, Tracer
from authz.config import Limits
from authz.engine import Engine
from authz.identity import KeysPending, KeyWait
from authz.listen import ListenError, probe_bind
from authz.model import Request
from authz.tls.material import Files
from authz.wire.http import (
    HttpAnswer,
    HttpListener,
    expressible,
    internal_error_answer,
    to_answer,
    to_request,
)

log = logging.getLogger("authz.http")

# Room beyond the header limit for the request line and framing: anything larger is refused by
# granian before our code sees it (the limits then answer 431 for what fits).
_FRAMING_BYTES = 4096
HEADER_READ_TIMEOUT_MS = 10_000
# use_tls: how long the worker with the new certificate runs beside the old one before the
# old one stops accepting (granian's default, 3.5 s, would serve the old pair that long).
RESPAWN_SECONDS = 1.0
# How long start() waits for granian to bind before it reports the address as unusable.
_BIND_WAIT_SECONDS = 5.0


@dataclass(slots=True)
class HttpAuthorizationApp:
    """The RSGI application of one HTTP listener."""

    engine: Engine
    limits: Limits
    listener: HttpListener = field(default_factory=HttpListener)
    observers: Sequence[Observer] = ()
    # The trace's parent comes from the request's own headers (Envoy's http_service client
    # forwards them): no transport carrier.
    tracer: Tracer | None = None

    def check(
        self,
        *,
        method: str,
        path: str,
        query: str,
        pairs: Sequence[tuple[str, str]],
        wait: KeyWait = KeyWait.BLOCK,
    ) -> HttpAnswer:
        """One check, synchronous: nothing in it waits on I/O; with the default `wait` it may
        wait (bounded) for a key refetch on this thread, as the gRPC door's `check`."""
        listener, limits = self.listener, self.limits
        read: list[Request] = []  # the view, for forward-auth's answer (expressible below)

        def view() -> Request:
            read.append(
                to_request(listener, limits, method=method, path=path, query=query, pairs=pairs)
            )
            return read[-1]

        return Checkpoint(self.engine, self.observers, self.tracer).run(
            view,
            lambda verdict: to_answer(verdict, listener),
            internal_error_answer,
            wait=wait,
            expressible=lambda verdict: expressible(verdict, listener, read[-1]),
        )

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":  # websockets are off; nothing else is served
            return
        check = functools.partial(
            self.check,
            method=scope.method,
            path=scope.path,
            query=scope.query_string,
            pairs=scope.headers.items(),
        )
        try:
            answer = check(wait=KeyWait.DEFER)
        except KeysPending as pending:
            # A kid a JWKS refetch in flight may bring: await it without holding the loop.
            await pending.refetch.wait_async()
            answer = check(wait=KeyWait.NEVER)
        if answer.body:
            proto.response_str(answer.status, answer.headers, answer.body)
        else:
            proto.response_empty(answer.status, answer.headers)


def _tls_options(files: Files | None) -> dict[str, Any]:
    """granian's TLS arguments: rustls, TLS 1.2 and 1.3 (its cipher suites are all AEAD)."""
    if files is None:
        return {}
    ca = Path(files.client_ca) if files.client_ca is not None else None
    return {
        "ssl_cert": Path(files.cert),
        "ssl_key": Path(files.key),
        "ssl_protocol_min": SSLProtocols.tls12,
        "ssl_ca": ca,
        "ssl_client_verify": ca is not None,
    }


def _server(app: Any, address: str, limits: Limits, tls: Files | None = None) -> Server:
    endpoint = addresses.parse(address)
    where: dict[str, Any] = (
        {"uds": Path(endpoint.unix_path)}
        if endpoint.unix_path is not None
        else {"address": endpoint.host, "port": endpoint.port}
    )
    return Server(
        app,
        interface=Interfaces.RSGI,
        websockets=False,
        backlog=1024,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS,
            max_buffer_size=limits.max_header_bytes + limits.max_path_bytes + _FRAMING_BYTES,
        ),
        # granian's own logger goes through ours (no handlers of its own).
        log_dictconfig={
            "loggers": {"_granian": {"handlers": [], "propagate": True}},
            "handlers": {},
        },
        **_tls_options(tls),
        **where,
    )


class HttpServers:
    """One embedded granian server per address (`host:port` or `unix:/path`), all on the
    running event loop. `start()` binds them all or raises OSError; `stop()` stops accepting
    and lets in-flight checks finish."""

    def __init__(
        self, apps: Sequence[tuple[Any, str]], limits: Limits, tls: Files | None = None
    ) -> None:
        """`apps`: (an RSGI application, normally an HttpAuthorizationApp, its address);
        `tls`: the certificate files to serve (private copies: authz.tls.copies)."""
        self._servers = [(_server(app, address, limits, tls), address) for app, address in apps]
        for server, _ in self._servers:
            server.respawn_interval = RESPAWN_SECONDS
        self._tasks: list[asyncio.Task[None]] = []

    def use_tls(self, files: Files) -> None:
        """Serve `files` to new connections, on the event loop's thread. granian cannot swap a
        certificate in place: each server starts a new worker with them on the same listening
        socket, then stops the old worker gracefully (its in-flight checks are answered)."""
        options = _tls_options(files)
        for server, _ in self._servers:
            server.build_ssl_context(
                options["ssl_cert"],
                options["ssl_key"],
                None,
                options["ssl_protocol_min"],
                options["ssl_ca"],
                [],
                options["ssl_client_verify"],
            )
            server.reload()  # type: ignore[no-untyped-call]

    @classmethod
    def for_engine(
        cls,
        engine: Engine,
        limits: Limits,
        listeners: Sequence[tuple[str, HttpListener]],
        observers: Sequence[Observer] = (),
        tracer: Tracer | None = None,
        tls: Files | None = None,
    ) -> HttpServers:
        """The servers `authz serve` runs: one HttpAuthorizationApp per (address, listener)."""
        return cls(
            [(HttpAuthorizationApp(engine, limits, listener, observers, tracer), address)
             for address, listener in listeners],
            limits,
            tls,
        )  # fmt: skip

    async def start(self) -> None:
        """Bind every address or raise ListenError (after stopping those already started)."""
        for server, address in self._servers:
            try:
                probe_bind(address)  # the system's reason (in use, no permission) for a bad one
            except ListenError:
                await self.stop()
                raise
            task = asyncio.create_task(server.serve(), name=f"http {address}")
            self._tasks.append(task)
            deadline = time.monotonic() + _BIND_WAIT_SECONDS
            while not server.wrks and not task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if task.done() or not server.wrks:
                await self.stop()
                error = task.exception() if task.done() else None
                raise ListenError(address, str(error or "the HTTP server did not start"))
            log.info("HTTP authorization listening on %s", address)

    async def stop(self) -> None:
        for server, _ in self._servers:
            server.stop()  # type: ignore[no-untyped-call]
        for task in self._tasks:
            try:
                await task
            except Exception:
                log.exception("HTTP server %s stopped with an error", task.get_name())
        self._tasks.clear()
