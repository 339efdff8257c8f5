"""Waiting for a key refetch on the gRPC server's threads (issue 10.8), with a real JWKS server.

A check whose kid only a refetch can bring waits for that refetch on its own thread, bounded by
`unknown_kid_wait`, so other checks are answered meanwhile (by other threads of the pool; and by
the same threads once the bound passes); a thousand concurrent made-up kids share one fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.policy import PolicyStore, load_policy_set
from authz.server import AuthorizationService, build_server
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
    engine = Engine(PolicyStore(policy_set), ServiceResolver(Settings(), keys), clock=lambda: NOW)
    return AuthorizationService(engine, Settings())


def rotated(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path, **options: Any
) -> tuple[SigningKey, SigningKey, AuthorizationService]:
    """A service that has fetched the JWKS holding `old` only; the server now also serves
    `new`, so a token signed with `new` needs a refetch."""
    old, new = make_key("ES256"), make_key("ES256")
    server.rotate(old)
    service = service_for(registries, server, tmp_path, **options)
    server.rotate(old, new)
    return old, new, service


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


def check(service: AuthorizationService, token: str) -> int:
    # As the gRPC server calls it, on one of its threads (no tracer: the context is not read).
    return status(service.Check(message(token), None))  # type: ignore[arg-type]


def test_first_token_of_a_rotated_key_is_allowed(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    _old, new, service = rotated(registries, server, tmp_path)
    assert check(service, sign(new, server)) == 200
    assert server.fetches == 2


def test_other_checks_are_answered_while_a_refetch_is_slow(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new, service = rotated(registries, server, tmp_path)
    server.hold()  # the refetch reaches the server and hangs there
    with futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(check, service, sign(new, server))
        assert server.wait_for_fetches(2)
        # Only the waiting check's thread waits: a check with a known key is answered.
        for _ in range(20):
            assert check(service, sign(old, server)) == 200
        assert not waiting.done()
        server.release()
        assert waiting.result() == 200


def test_a_thousand_concurrent_made_up_kids_cost_one_fetch(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    old, new, service = rotated(registries, server, tmp_path)
    tokens = [sign(old, server, kid=f"made-up-{i}") for i in range(1000)] + [sign(new, server)]
    with futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda token: check(service, token), tokens))
    assert answers == [401] * 1000 + [200]  # the real new key rode on the same refetch
    assert server.fetches == 2


def test_a_refetch_past_its_deadline_is_not_waited_for(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    _old, new, service = rotated(registries, server, tmp_path, unknown_kid_wait=0.01)
    server.hold()
    assert check(service, sign(new, server)) == 401  # the deadline passed: refused
    assert server.wait_for_fetches(2)
    assert check(service, sign(new, server)) == 401  # still in flight, not waited for
    server.release()


@contextmanager
def held_stub(
    service: AuthorizationService, server: JwksServer, tmp_path: Path
) -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    """`service` behind the real gRPC server with 2 threads, while the JWKS server holds every
    refetch (released on exit whatever happened, so no thread is left waiting)."""
    address = f"unix:{tmp_path / 'authz.sock'}"
    server.hold()
    grpc_server, _health = build_server(
        service, replace(service.settings, listen=(address,), grpc_threads=2)
    )
    grpc_server.start()
    try:
        with grpc.insecure_channel(address) as channel:
            yield external_auth_pb2_grpc.AuthorizationStub(channel)
    finally:
        server.release()
        grpc_server.stop(None)


def test_the_thread_pool_is_not_starved_by_checks_waiting_on_a_slow_refetch(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    """Through the real gRPC server with 2 threads: more checks wait on a hung JWKS refetch
    than there are threads, and many concurrent checks with a known key are still all
    answered, because each wait ends at `unknown_kid_wait` (then the kid is refused)."""
    old, new, service = rotated(registries, server, tmp_path, unknown_kid_wait=0.2)
    with held_stub(service, server, tmp_path) as stub:  # the refetch never answers during the test
        waiting = [stub.Check.future(message(sign(new, server)), timeout=30) for _ in range(4)]
        assert server.wait_for_fetches(2)
        known = [stub.Check.future(message(sign(old, server)), timeout=30) for _ in range(200)]
        assert [status(call.result()) for call in known] == [200] * 200
        assert [status(call.result()) for call in waiting] == [401] * 4
        assert server.fetches == 2


def test_a_check_waiting_on_a_refetch_holds_only_its_own_thread(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    """Through the real gRPC server: while one check waits (unbounded here) for the new key,
    the other threads answer many concurrent checks; then the waiting one is allowed."""
    old, new, service = rotated(registries, server, tmp_path)
    with held_stub(service, server, tmp_path) as stub:
        waiting = stub.Check.future(message(sign(new, server)), timeout=60)
        assert server.wait_for_fetches(2)
        known = [stub.Check.future(message(sign(old, server)), timeout=30) for _ in range(200)]
        assert [status(call.result()) for call in known] == [200] * 200
        assert not waiting.done()
        server.release()
        assert status(waiting.result()) == 200
