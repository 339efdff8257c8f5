"""The HTTP authorization server: granian (RSGI) on the service's own event loop.

Every check goes wire.http -> engine -> wire.http, like the gRPC door's inbound -> engine ->
outbound, with the same observers (metrics, decision log). Nothing that goes wrong inside a
check can turn into an allow: an unexpected exception is logged and answered with a deny.

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

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

from authz import addresses
from authz.config import Limits
from authz.engine import Engine, new_decision_id
from authz.errors import AuthzError
from authz.identity import KeysPending, KeyWait
from authz.model import Request, Verdict
from authz.server import ListenError, Observer, notify, probe_bind
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
# How long start() waits for granian to bind before it reports the address as unusable.
_BIND_WAIT_SECONDS = 5.0


@dataclass(slots=True)
class HttpAuthorizationApp:
    """The RSGI application of one HTTP listener."""

    engine: Engine
    limits: Limits
    listener: HttpListener = field(default_factory=HttpListener)
    observers: Sequence[Observer] = ()

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
        started = time.perf_counter()
        try:
            request: Request | None
            verdict: Verdict
            try:
                request = to_request(
                    self.listener, self.limits, method=method, path=path, query=query, pairs=pairs
                )
            except AuthzError as error:
                request, verdict = None, self.engine.refuse(error)
            else:
                verdict = expressible(self.engine.check(request, wait=wait), self.listener, request)
            answer = to_answer(verdict, self.listener)
        except KeysPending:
            raise  # not a failure: __rsgi__ awaits the refetch and asks again
        except Exception:
            decision_id = new_decision_id()
            log.exception("check failed; denied (decision %s)", decision_id)
            return internal_error_answer(decision_id)
        elapsed = time.perf_counter() - started
        notify(self.observers, request, verdict, elapsed)
        return answer

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


def _server(app: Any, address: str, limits: Limits) -> Server:
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
        **where,
    )


class HttpServers:
    """One embedded granian server per address (`host:port` or `unix:/path`), all on the
    running event loop. `start()` binds them all or raises OSError; `stop()` stops accepting
    and lets in-flight checks finish."""

    def __init__(self, apps: Sequence[tuple[Any, str]], limits: Limits) -> None:
        """`apps`: (an RSGI application, normally an HttpAuthorizationApp, its address)."""
        self._servers = [(_server(app, address, limits), address) for app, address in apps]
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def for_engine(
        cls,
        engine: Engine,
        limits: Limits,
        listeners: Sequence[tuple[str, HttpListener]],
        observers: Sequence[Observer] = (),
    ) -> HttpServers:
        """The servers `authz serve` runs: one HttpAuthorizationApp per (address, listener)."""
        return cls(
            [(HttpAuthorizationApp(engine, limits, listener, observers), address)
             for address, listener in listeners],
            limits,
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
