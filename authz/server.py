"""The gRPC server: Envoy's Authorization/Check, gRPC health and server reflection.

grpcio's synchronous server with a pool of `settings.grpc_threads` threads, chosen by
measurement over grpc.aio (docs/benchmarks.md, fast path log: the same `check` is served 1.5-2x
faster directly and ~1.2x behind Envoy; the empty sync servicer is the higher ceiling too). The
process's asyncio loop (admin endpoint, HTTP door, signals) runs beside it on the main thread.

Every check goes inbound -> engine -> outbound through the one checkpoint (`authz.checkpoint`):
nothing that goes wrong inside a check can turn into an allow.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from authz import addresses
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.checkpoint import Checkpoint, Observer, Tracer
from authz.config import Settings
from authz.engine import Engine
from authz.interceptors import GuardInterceptor, chain
from authz.listen import ListenError, probe_bind, set_socket_access
from authz.wire.inbound import to_request
from authz.wire.outbound import internal_error_response, to_check_response

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


@dataclass(slots=True)
class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    """The gRPC door: reads a CheckRequest into the request view (`authz.wire.inbound`) and
    writes the verdict back (`authz.wire.outbound`); the checkpoint does the rest."""

    engine: Engine
    settings: Settings
    observers: Sequence[Observer] = ()
    tracer: Tracer | None = None

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        # Envoy's ext_authz client sends its span's context in the call's metadata, not in the
        # CheckRequest (whose headers are the downstream request's). Read only when tracing.
        carrier = dict(context.invocation_metadata() or ()) if self.tracer is not None else None
        # On a pool thread: a kid that a JWKS refetch in flight may bring (a key rotation) is
        # waited for here, bounded by `unknown_kid_wait`, while the other threads keep serving.
        return self.check(request, carrier=carrier)

    def check(
        self,
        message: external_auth_pb2.CheckRequest,
        *,
        carrier: Mapping[str, str] | None = None,
    ) -> external_auth_pb2.CheckResponse:
        """One check, synchronous: nothing in it waits on I/O but a key refetch in flight,
        for at most `unknown_kid_wait` seconds, on this thread."""
        settings = self.settings
        return Checkpoint(self.engine, self.observers, self.tracer).run(
            lambda: to_request(
                message, settings.limits, jwt_metadata_namespace=settings.jwt_authn_metadata
            ),
            to_check_response,
            internal_error_response,
            # The source address, so the decision log can count refusals by source.
            source=lambda: message.attributes.source.address.socket_address.address or None,
            carrier=carrier,
        )


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """grpc core channel arguments of the listener."""
    return [
        # Envoy keeps few long-lived HTTP/2 connections; let each carry many streams.
        ("grpc.max_concurrent_streams", 1024),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        # A connection that never sends the HTTP/2 preface holds a file descriptor until it is
        # closed: 1,100 of them exhaust the common 1024 limit and block every new connection.
        ("grpc.server_handshake_timeout_ms", round(settings.handshake_timeout * 1000)),
        # An established connection without any call is closed with a GOAWAY (Envoy reconnects).
        ("grpc.max_connection_idle_ms", round(settings.idle_timeout * 1000)),
    ]


def build_server(
    service: AuthorizationService,
    settings: Settings,
    *,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, Health]:
    """A grpcio server (not started) with Check, health and reflection bound to every
    `settings.listen` address (`host:port` or `unix:/path`), served by `settings.grpc_threads`
    threads, over TLS with `credentials` (authz.tls.grpc_tls). Raises ListenError for an
    address it cannot bind."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        # The guard innermost, so the metrics see its refusals; ours folded into one
        # interceptor, so a call pays one lookup for them all.
        interceptors=chain([*interceptors, GuardInterceptor(max(1, settings.grpc_threads // 4))]),
        options=server_options(settings),
        # Calls beyond the threads wait in grpc's queue (bounded by max_concurrent_streams per
        # connection) rather than being refused: Envoy's ext_authz would turn a refusal into a
        # deny, and a busy second is better answered late than wrongly.
        maximum_concurrent_rpcs=None,
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_state = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, server)
    enable_reflection(
        [AUTHORIZATION_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server
    )
    for address in settings.listen:
        probe_bind(address)  # grpc says only "failed to bind" (and logs to stderr): find why first
        try:
            if credentials is None:
                bound = server.add_insecure_port(addresses.bindable(address))
            else:
                bound = server.add_secure_port(addresses.bindable(address), credentials)
        except RuntimeError as error:
            raise ListenError(address, "cannot bind") from error
        if bound == 0 and not address.startswith("unix:"):  # the sync server returns 0
            raise ListenError(address, "cannot bind")
        if address.startswith("unix:"):
            set_socket_access(address.removeprefix("unix:"), settings)
    return server, health_state


def enable_reflection(services: Sequence[str], server: grpc.Server) -> None:
    """Server reflection as `grpc.reflection.v1alpha` (grpcio-reflection) and `grpc.reflection.v1`
    (what current grpcurl and Postman ask first). v1 is v1alpha renamed, message for message and
    field for field, so one servicer answers both; v1's file descriptor (v1alpha's with the
    package renamed) is added to the pool so that v1 can describe itself too."""
    names = [*services, reflection.SERVICE_NAME, _reflection_v1_service()]
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in names[-2:]
        )
    )


def _reflection_v1_service() -> str:
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(file)
        file.name, file.package = name, "grpc.reflection.v1"
        for message in file.message_type:
            for fld in message.field:
                if fld.type_name.startswith(".grpc.reflection.v1alpha."):
                    fld.type_name = fld.type_name.replace(".v1alpha.", ".v1.", 1)
        for method in file.service[0].method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.", 1)
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.", 1)
        pool.Add(file)
    return "grpc.reflection.v1.ServerReflection"


class Phase(StrEnum):
    """Where the server is in its life. Only SERVING is ready."""

    STARTING = "starting"  # listening, waiting for the first key sets (or their grace)
    SERVING = "serving"
    DRAINING = "draining"  # shutting down: in-flight checks finish, new ones go elsewhere


class Health:
    """The one readiness truth. gRPC health (`grpc.health.v1`, for the whole server and for
    Authorization) says SERVING exactly when `phase` is SERVING, and the admin endpoint's
    /readyz reads `phase` too, so the two always agree."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self.phase = Phase.STARTING

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if phase is Phase.SERVING
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", AUTHORIZATION_SERVICE):
            self.servicer.set(name, status)


async def run_until_signalled(
    server: grpc.Server | None,
    health_state: Health,
    *,
    grace_seconds: float = 10.0,
    on_reload: Callable[[], None] | None = None,
    also_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking new checks and let in-flight ones finish:
    on the gRPC `server` (None: HTTP only) and with `also_stop` (the HTTP listeners), together."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    await stop.wait()
    log.info("stopping: letting in-flight checks finish (up to %.0fs)", grace_seconds)
    # Tell health checkers first so Envoy shifts traffic before the listener goes away.
    health_state.set_phase(Phase.DRAINING)
    stopping: list[Awaitable[Any]] = []
    if also_stop is not None:
        stopping.append(also_stop())
    if server is not None:
        # The sync server's stop returns at once; its event is set when the last call is done.
        stopped = server.stop(grace_seconds)
        stopping.append(asyncio.to_thread(stopped.wait))
    await asyncio.gather(*stopping)
    log.info("stopped")
