"""The gRPC server in-process: fail closed on internal errors, health, reflection, unix sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.app import App, build_app
from authz.config import Settings
from authz.interceptors import MetricsInterceptor
from authz.observe.metrics import Metrics
from authz.server import AUTHORIZATION_SERVICE, Phase, build_server

REPO = Path(__file__).resolve().parents[2]
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"


def check_request(path: str, principal: str = FRONTEND) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = principal
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", path, "shop.example.com"
    return request


@pytest.fixture
def app() -> App:
    built = build_app(Settings(policies=str(REPO / "policies"), watch=False))
    yield built
    built.close()


@pytest.fixture
async def channel(app: App, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    address = f"unix:{tmp_path / 'authz.sock'}"
    server, health = build_server(app.service, replace(app.settings, listen=(address,)))
    server.start()
    health.set_phase(Phase.SERVING)
    async with grpc.aio.insecure_channel(address) as open_channel:
        yield open_channel
    server.stop(None)


async def test_checks_over_a_unix_socket(channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    allowed = await stub.Check(check_request("/api/orders"))
    assert allowed.status.code == 0 and allowed.HasField("ok_response")
    denied = await stub.Check(check_request("/admin/x"))
    assert denied.status.code != 0 and denied.denied_response.status.code == 403


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", AUTHORIZATION_SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in call:
        names = {s.name for s in response.list_services_response.service}
        break
    assert AUTHORIZATION_SERVICE == "envoy.service.auth.v3.Authorization"
    assert {AUTHORIZATION_SERVICE, "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection_v1_and_v1alpha(channel: grpc.aio.Channel, version: str) -> None:
    """grpcurl and Postman ask `grpc.reflection.v1` first; older clients v1alpha. The two are
    the same messages under another package, so v1alpha's classes encode v1 calls byte for byte."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=AUTHORIZATION_SERVICE),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
        ),
    ]
    answers = [answer async for answer in call(iter(requests))]
    assert len(answers) == 3 and not any(a.HasField("error_response") for a in answers)
    names = {s.name for s in answers[0].list_services_response.service}
    assert {
        AUTHORIZATION_SERVICE,
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == "envoy.service.auth.v3" for f in files)
    own = descriptor_pb2.FileDescriptorProto.FromString(
        answers[2].file_descriptor_response.file_descriptor_proto[0]
    )
    assert own.package == f"grpc.reflection.{version}"


class _BrokenEngine:
    def check(self, request: object) -> object:
        raise RuntimeError("a bug in the engine")

    def refuse(self, error: object) -> object:
        raise RuntimeError("a bug in the engine")


def test_an_unexpected_error_is_a_deny(app: App) -> None:
    app.service.engine = _BrokenEngine()  # type: ignore[assignment]
    answer = app.service.check(check_request("/api/orders"))
    assert answer.status.code != 0
    assert answer.denied_response.status.code == 403
    assert answer.dynamic_metadata.fields["reason"].string_value == "internal_error"
    assert not answer.HasField("ok_response")


def test_an_observer_that_fails_changes_nothing(app: App) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    app.service.observers = [broken]
    answer = app.service.check(check_request("/api/orders"))
    assert answer.status.code == 0


async def test_health_state_is_what_grpc_health_says(app: App, tmp_path: Path) -> None:
    """/readyz reads Health.phase; it must always match what gRPC health answers."""
    address = f"unix:{tmp_path / 'h.sock'}"
    server, health = build_server(app.service, replace(app.settings, listen=(address,)))
    server.start()
    assert health.phase is Phase.STARTING and not health.serving
    try:
        async with grpc.aio.insecure_channel(address) as open_channel:
            stub = health_pb2_grpc.HealthStub(open_channel)
            for phase in (Phase.STARTING, Phase.SERVING, Phase.DRAINING):
                health.set_phase(phase)
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service=AUTHORIZATION_SERVICE)
                )
                assert health.serving is (phase is Phase.SERVING)
                assert (answer.status == health_pb2.HealthCheckResponse.SERVING) is health.serving
    finally:
        server.stop(None)


async def test_grpc_server_metrics_by_method_and_code(app: App, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    address = f"unix:{tmp_path / 'm.sock'}"
    server, health = build_server(
        app.service,
        replace(app.settings, listen=(address,)),
        interceptors=[MetricsInterceptor(metrics.rpc)],
    )
    server.start()
    health.set_phase(Phase.SERVING)
    try:
        async with grpc.aio.insecure_channel(address) as open_channel:
            check = external_auth_pb2_grpc.AuthorizationStub(open_channel)
            for path in ("/api/orders", "/admin/x", "/api/orders"):
                await check.Check(check_request(path))
            health_stub = health_pb2_grpc.HealthStub(open_channel)
            await health_stub.Check(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.aio.AioRpcError) as info:  # aborted: NOT_FOUND
                await health_stub.Check(health_pb2.HealthCheckRequest(service="nope"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            reflection_stub = reflection_pb2_grpc.ServerReflectionStub(open_channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for _ in reflection_stub.ServerReflectionInfo(iter([request])):
                pass
            with pytest.raises(grpc.aio.AioRpcError):  # unknown method: not counted
                await open_channel.unary_unary("/no.Such/Method")(b"")
    finally:
        server.stop(None)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith("grpc_server_")
    }

    def labels(grpc_type: str, service: str, method: str, **more: str) -> tuple[Any, ...]:
        return tuple(
            sorted(
                {
                    "grpc_type": grpc_type,
                    "grpc_service": service,
                    "grpc_method": method,
                    **more,
                }.items()
            )
        )

    auth = ("unary", AUTHORIZATION_SERVICE, "Check")
    health_check = ("unary", "grpc.health.v1.Health", "Check")
    info_stream = (
        "bidi_stream",
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    )
    assert samples[("grpc_server_handled_total", labels(*auth, grpc_code="OK"))] == 3
    assert samples[("grpc_server_handling_seconds_count", labels(*auth))] == 3
    assert samples[("grpc_server_handled_total", labels(*health_check, grpc_code="OK"))] == 1
    assert samples[("grpc_server_handled_total", labels(*health_check, grpc_code="NOT_FOUND"))] == 1
    assert samples[("grpc_server_handled_total", labels(*info_stream, grpc_code="OK"))] == 1
    assert not [k for k in samples if "no.Such" in str(k)]


async def test_undecodable_requests_do_not_wedge_the_connection(
    channel: grpc.aio.Channel,
) -> None:
    """grpcio's sync server leaks the stream of a request that fails to decode: past 1,024 of
    them the connection refused every call (UNAVAILABLE). Decoded in the handler, each is
    answered INTERNAL and the connection keeps serving."""
    raw = channel.unary_unary(f"/{AUTHORIZATION_SERVICE}/Check")
    for _ in range(1100):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.INTERNAL
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(1100):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"\xff\xff\xff")
    answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
        check_request("/api/orders")
    )
    assert answer.status.code == 0
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1


async def test_open_streams_cannot_take_the_threads_that_serve_checks(
    channel: grpc.aio.Channel,
) -> None:
    """A reflection stream holds a pool thread while open: only grpc_threads // 4 (8 -> 2) may
    be open at once; health Watch streams hold no thread at all. Checks are answered."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    held = []
    for _ in range(2):
        call = stub.ServerReflectionInfo()
        await call.write(request)
        assert (await call.read()).HasField("list_services_response")
        held.append(call)
    # The server refuses a stream before it reads a message, so the refused one is only read:
    # a write racing the refusal fails in the client, which then reports its own INTERNAL.
    refused = stub.ServerReflectionInfo()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await refused.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)]
    for watch in watches:
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    check = external_auth_pb2_grpc.AuthorizationStub(channel)
    answers = [await check.Check(check_request("/api/orders")) for _ in range(50)]
    assert all(answer.status.code == 0 for answer in answers)
    for call in [*held, *watches]:
        call.cancel()
    # A closed stream gives its place back (once the server has seen the cancel: retried).
    for _ in range(100):
        reopened = stub.ServerReflectionInfo()
        try:
            await reopened.write(request)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)  # refused before the write (the client says INTERNAL)
            continue
        try:
            assert (await reopened.read()).HasField("list_services_response")
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled streams never gave their places back")
    reopened.cancel()
