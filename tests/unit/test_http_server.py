"""The HTTP door's server in-process: real granian on TCP and unix sockets, real engine."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.app import App, build_app
from authz.config import Limits, Settings
from authz.http_server import HttpAuthorizationApp, HttpServers
from authz.listen import ListenError
from authz.wire.http import ENVOY_PATH_HEADER, PROXY_REPLACES, HttpListener, HttpMode
from tests.support.nginx import replaced_headers
from tests.support.ports import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
TRUSTING = HttpListener(trust_xfcc=True)


@pytest.fixture
def app() -> Iterator[App]:
    built = build_app(Settings(policies=str(REPO / "policies"), watch=False))
    yield built
    built.close()


async def exchange(address: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 request; (status, lower-cased headers, body)."""
    if address.startswith("unix:"):
        reader, writer = await asyncio.open_unix_connection(address.removeprefix("unix:"))
    else:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    text = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
    writer.close()
    return int(status_line.split()[1]), headers, text


def envoy_head(path: str, *extra: str, method: str = "GET") -> str:
    lines = [
        f"{method} {path} HTTP/1.1",
        "host: shop.example.com",
        f"{ENVOY_PATH_HEADER}: {path}",
        f"x-forwarded-client-cert: URI={FRONTEND}",
        *extra,
        "connection: close",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.fixture
async def addresses(app: App, tmp_path: Path) -> AsyncIterator[list[str]]:
    tcp = f"{LOOPBACK}:{free_port()}"
    unix = f"unix:{tmp_path / 'authz-http.sock'}"
    servers = HttpServers.for_engine(
        app.engine,
        app.settings.limits,
        [(tcp, TRUSTING), (unix, TRUSTING)],
        observers=app.service.observers,
    )
    await servers.start()
    yield [tcp, unix]
    await servers.stop()


async def test_allow_and_deny_over_tcp_and_unix_sockets(addresses: list[str]) -> None:
    for address in addresses:
        status, headers, body = await exchange(address, envoy_head("/api/orders"))
        assert status == 200, body
        assert headers["x-authz-principal"] == FRONTEND
        assert headers["x-authz-decision-id"]
        status, headers, body = await exchange(address, envoy_head("/admin/x"))
        assert status == 403
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "forbidden"
        status, _, _ = await exchange(address, envoy_head("/api/a%2Fb"))
        assert status == 400


async def test_a_request_body_is_not_needed_and_does_not_hurt(addresses: list[str]) -> None:
    big = b"x" * 200_000
    status, _, _ = await exchange(
        addresses[0],
        envoy_head("/api/orders", f"content-length: {len(big)}", method="POST"),
        big,
    )
    assert status in (200, 403)  # judged on the head; the body is never read
    status, _, _ = await exchange(addresses[0], envoy_head("/api/orders"))
    assert status == 200


async def test_headers_over_the_limits_are_431_or_cut_off(addresses: list[str]) -> None:
    over_limit = "x-big: " + "a" * Limits().max_header_bytes
    status, _, body = await exchange(addresses[0], envoy_head("/api/orders", over_limit))
    assert status == 431 and json.loads(body)["error"] == "request_too_large"
    # Beyond granian's buffer (limits + framing): refused before any Python code runs.
    beyond_buffer = "x-big: " + "a" * 200_000
    try:
        status, _, _ = await exchange(addresses[0], envoy_head("/api/orders", beyond_buffer))
    except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
        return  # the connection was closed without an answer: not an allow either
    assert status >= 400


async def test_an_address_in_use_is_a_listen_error_with_the_reason(app: App) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        address = f"{LOOPBACK}:{taken.getsockname()[1]}"
        servers = HttpServers.for_engine(app.engine, app.settings.limits, [(address, TRUSTING)])
        with pytest.raises(
            ListenError, match=f"cannot listen on {address}: address already in use"
        ):
            await servers.start()


async def test_stop_closes_the_listener(app: App) -> None:
    address = f"{LOOPBACK}:{free_port()}"
    servers = HttpServers.for_engine(app.engine, app.settings.limits, [(address, TRUSTING)])
    await servers.start()
    assert (await exchange(address, envoy_head("/api/orders")))[0] == 200
    await servers.stop()
    with pytest.raises(OSError):
        await exchange(address, envoy_head("/api/orders"))


class _BrokenEngine:
    def check(self, request: object, *, wait: object = None) -> object:
        raise RuntimeError("a bug in the engine")

    def refuse(self, error: object) -> object:
        raise RuntimeError("a bug in the engine")


def test_an_internal_error_is_a_deny() -> None:
    door = HttpAuthorizationApp(_BrokenEngine(), Limits(), TRUSTING)  # type: ignore[arg-type]
    answer = door.check(
        method="GET",
        path="/api/orders",
        query="",
        pairs=[("host", "shop.example.com"), (ENVOY_PATH_HEADER, "/api/orders")],
    )
    assert answer.status == 403
    assert json.loads(answer.body)["error"] == "forbidden"


def test_observers_see_every_check_and_cannot_break_it(app: App) -> None:
    seen: list[tuple[object, str]] = []

    def record(request: object, verdict: object, elapsed: float) -> None:
        seen.append((request, verdict.decision.reason))  # type: ignore[attr-defined]
        raise RuntimeError("observer bug")

    door = HttpAuthorizationApp(app.engine, Limits(), TRUSTING, observers=[record])
    good = [("host", "shop.example.com"), (ENVOY_PATH_HEADER, "/api/orders"),
            ("x-forwarded-client-cert", f"URI={FRONTEND}")]  # fmt: skip
    assert door.check(method="GET", path="/api/orders", query="", pairs=good).status == 200
    bad = [("host", "shop.example.com")]  # no path header: refused, still observed
    assert door.check(method="GET", path="/api/orders", query="", pairs=bad).status == 400
    assert seen[1] == (None, "bad_request")
    assert seen[0][0] is not None


async def test_forward_auth_listener_over_tcp(app: App) -> None:
    address = f"{LOOPBACK}:{free_port()}"
    listener = HttpListener(mode=HttpMode.FORWARD_AUTH, trust_xfcc=True)
    servers = HttpServers.for_engine(app.engine, app.settings.limits, [(address, listener)])
    await servers.start()
    try:

        def head(uri: str, *extra: str) -> str:
            lines = [
                "GET /auth HTTP/1.1",  # the proxy's own request line: never judged
                "host: authz.internal",
                "x-forwarded-method: GET",
                f"x-forwarded-uri: {uri}",
                "x-forwarded-host: shop.example.com",
                f"x-forwarded-client-cert: URI={FRONTEND}",
                f"{PROXY_REPLACES}: {replaced_headers()}",  # as the shipped configs send
                *extra,
                "connection: close",
            ]
            return "\r\n".join(lines) + "\r\n\r\n"

        status, headers, _ = await exchange(address, head("/api/orders"))
        assert status == 200 and headers["x-authz-principal"] == FRONTEND
        assert (await exchange(address, head("/admin/x")))[0] == 403
        # A client-added X-Original-URI that disagrees with the proxy's: ambiguous, refused.
        assert (await exchange(address, head("/api/orders", "x-original-uri: /admin")))[0] == 400
    finally:
        await servers.stop()


ESCAPED_PATHS = (
    "/api/orders%FF",
    "/api/ord%65rs",
    "/api/orders/caf%C3%A9",
    "/api/orders%25",
    "/api/orders%zz",
    "/api/orders+x",
    "/api/orders%00",
    "/api/orders/%2e%2e/x",
)


async def test_granian_decodes_paths_as_the_cross_check_expects(
    app: App, addresses: list[str]
) -> None:
    # granian hands the app a decoded path; the door cross-checks it against Envoy's raw one.
    # Whatever the escape, the answer must be the gRPC door's for the same raw path.
    for raw in ESCAPED_PATHS:
        status, _, body = await exchange(addresses[0], envoy_head(raw))
        message = CheckRequest()
        message.attributes.source.principal = FRONTEND
        http = message.attributes.request.http
        http.method, http.path, http.host = "GET", raw, "shop.example.com"
        grpc = app.service.check(message)
        expected = 200 if grpc.HasField("ok_response") else grpc.denied_response.status.code
        assert status == expected, (raw, body)
