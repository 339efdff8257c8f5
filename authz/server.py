"""The grpc.aio server: Envoy's Authorization/Check, gRPC health and server reflection.

Every check goes inbound -> engine -> outbound. Nothing that goes wrong inside a check can turn
into an allow: an unexpected exception is logged and answered with a deny.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.config import Settings
from authz.engine import DecisionIds, Engine
from authz.errors import AuthzError
from authz.model import Request, Verdict
from authz.wire.inbound import to_request
from authz.wire.outbound import internal_error_response, to_check_response

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

# Called after every check with the request (None when it could not be read), the verdict and
# the check's duration in seconds. Observers must not block: the decision log queues.
Observer = Callable[[Request | None, Verdict, float], None]


@dataclass(slots=True)
class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    engine: Engine
    settings: Settings
    observers: Sequence[Observer] = ()
    _fallback_ids: DecisionIds = field(default_factory=DecisionIds)

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return self.check(request)

    def check(self, message: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
        """One check, synchronous: nothing in it waits on I/O."""
        started = time.perf_counter()
        try:
            request: Request | None
            try:
                request = to_request(
                    message,
                    self.settings.limits,
                    jwt_metadata_namespace=self.settings.jwt_authn_metadata,
                )
            except AuthzError as error:
                # The source address, so the decision log can count refusals by source.
                source = message.attributes.source.address.socket_address.address or None
                request, verdict = None, self.engine.refuse(error, source)
            else:
                verdict = self.engine.check(request)
            response = to_check_response(verdict)
        except Exception:
            decision_id = self._fallback_ids()
            log.exception("check failed; denied (decision %s)", decision_id)
            return internal_error_response(decision_id)
        elapsed = time.perf_counter() - started
        for observe in self.observers:
            try:
                observe(request, verdict, elapsed)
            except Exception:  # an observer's fault must never change or delay an answer
                log.exception("observer failed")
        return response


def build_server(
    service: AuthorizationService, listen: Sequence[str]
) -> tuple[grpc.aio.Server, Health]:
    """A grpc.aio server with Check, health and reflection bound to every `listen` address
    (`host:port` or `unix:/path`)."""
    server = grpc.aio.server(
        options=[
            # Envoy keeps few long-lived HTTP/2 connections; let each carry many streams.
            ("grpc.max_concurrent_streams", 1024),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_state = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    reflection.enable_server_reflection(
        [
            AUTHORIZATION_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    for address in listen:
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot listen on {address}")
    return server, health_state


class Health:
    """gRPC health (`grpc.health.v1`) for the whole server and for Authorization, and whether it
    says SERVING: the admin endpoint's /readyz reads `serving` so both always agree (NOT_SERVING
    while keys load and from the moment shutdown starts)."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.serving = False

    async def set(self, serving: bool) -> None:
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", AUTHORIZATION_SERVICE):
            await self.servicer.set(name, status)


async def run_until_signalled(
    server: grpc.aio.Server,
    health_state: Health,
    *,
    grace_seconds: float = 10.0,
    on_reload: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking new checks and let in-flight ones finish."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    await stop.wait()
    log.info("stopping: letting in-flight checks finish (up to %.0fs)", grace_seconds)
    # Tell health checkers first so Envoy shifts traffic before the listener goes away.
    await health_state.set(False)
    await server.stop(grace_seconds)
    log.info("stopped")
