"""Waiting for a key refetch on the grpc.aio event loop (issue 10.8), with a real JWKS server.

The service's `Check` coroutine is driven on the test's event loop exactly as grpc.aio drives
it: a check whose kid only a refetch can bring awaits that refetch without holding the loop, so
other checks are answered meanwhile; a thousand concurrent made-up kids share one fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.config import Settings
from authz.engine import Engine
from authz.identity import IdentityResolver, KeyRegistry
from authz.policy import PolicyStore, load_policy_set
from authz.server import AuthorizationService
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, claims, make_key

from .conftest import NOW


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer() as running:
        yield running


def service_for(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path, **options: Any
) -> AuthorizationService:
    (tmp_path / "p.yaml").write_text(
        "authentication:\n"
        f"  jwt: [{{issuer: '{server.issuer}', jwks_uri: '{server.jwks_uri}'}}]\n"
        f"rules: [{{name: users, action: allow, from: [{{issuers: ['{server.issuer}']}}]}}]\n"
    )
    policy_set = load_policy_set(tmp_path)
    # A generous wait bound: these tests are about order, not speed (the default is 0.2 s).
    options.setdefault("unknown_kid_wait", 30)
    options.setdefault("unknown_kid_cooldown", 3600)
    keys = registries(**options)
    keys.ensure(policy_set.jwt_providers)
    assert keys.wait_ready(10)
    engine = Engine(PolicyStore(policy_set), IdentityResolver(Settings(), keys), clock=lambda: NOW)
    return AuthorizationService(engine, Settings())


def message(token: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/", "api.example.com"
    http.headers["authorization"] = f"Bearer {token}"
    return request


def status(response: external_auth_pb2.CheckResponse) -> int:
    return 200 if response.status.code == 0 else int(response.denied_response.status.code)


def sign(key: SigningKey, server: JwksServer, kid: str | bool = True) -> str:
    return key.sign(claims(server.issuer, now=NOW), kid=kid)


async def check(service: AuthorizationService, token: str) -> int:
    return status(await service.Check(message(token), None))  # type: ignore[arg-type]


async def test_first_token_of_a_rotated_key_is_allowed(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new = make_key("ES256"), make_key("ES256")
    server.rotate(old)
    service = service_for(registries, server, tmp_path)
    server.rotate(old, new)
    assert await check(service, sign(new, server)) == 200
    assert server.fetches == 2


async def test_other_checks_are_answered_while_a_refetch_is_slow(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new = make_key("ES256"), make_key("ES256")
    server.rotate(old)
    service = service_for(registries, server, tmp_path)
    server.rotate(old, new)
    server.hold()  # the refetch reaches the server and hangs there
    waiting = asyncio.create_task(check(service, sign(new, server)))
    assert await asyncio.to_thread(server.wait_for_fetches, 2)
    # The loop is free: a check with a known key is answered while the other one waits.
    for _ in range(20):
        assert await check(service, sign(old, server)) == 200
    assert not waiting.done()
    server.release()
    assert await waiting == 200


async def test_a_thousand_concurrent_made_up_kids_cost_one_fetch(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new = make_key("ES256"), make_key("ES256")
    server.rotate(old)
    service = service_for(registries, server, tmp_path)
    server.rotate(old, new)
    made_up = [check(service, sign(old, server, kid=f"made-up-{i}")) for i in range(1000)]
    answers = await asyncio.gather(*made_up, check(service, sign(new, server)))
    assert answers == [401] * 1000 + [200]  # the real new key rode on the same refetch
    assert server.fetches == 2


async def test_a_refetch_past_its_deadline_is_not_waited_for(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new = make_key("ES256"), make_key("ES256")
    server.rotate(old)
    service = service_for(registries, server, tmp_path, unknown_kid_wait=0.01)
    server.rotate(old, new)
    server.hold()
    assert await check(service, sign(new, server)) == 401  # the deadline passed: refused
    assert await asyncio.to_thread(server.wait_for_fetches, 2)
    assert await check(service, sign(new, server)) == 401  # still in flight, not waited for
    server.release()
