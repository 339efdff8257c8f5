"""Fuzzing the wire: random and mutated CheckRequest bytes at the real service process.

The bytes go out as they are (`unary_unary(..., request_serializer=None)`), so the service's
own protobuf parsing is under test too. Every call is answered or refused (a gRPC error) within
a bound; an answer is OK only when the bytes decode (with authz's own generated classes) to a
request the policy allows, judged by an oracle written from docs/policy.md; and the server keeps
serving. Then requests over the size limits, and the token-trick corpus through the process.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.hostile.service import (
    AUDIENCE,
    HOST,
    NONE,
    check_request,
    metadata_reason,
    oracle,
    parse_response,
    policy_yaml,
    protos,
    response_status,
    token_state,
)
from tests.hostile.test_path_corpus import CORPUS
from tests.hostile.test_token_corpus import CASES, ISS, Ctx
from tests.support.jwks_server import JwksServer
from tests.support.service import ServiceProcess
from tests.support.tokens import claims, jwks_json, make_key

SEED = 20261123
BOUND = 10.0  # seconds per call: "answered within", not a speed check


class Target:
    def __init__(self, service: ServiceProcess, ctx: Ctx) -> None:
        self.service = service
        self.ctx = ctx
        self.valid = {ctx.rsa.sign(ctx.good(sub=f"u{i}")) for i in range(4)}
        self.channel = service.channel()
        self.call = service.raw_check(self.channel)

    def send(self, data: bytes) -> Any:
        """The parsed CheckResponse, or the grpc.RpcError that refused the bytes."""
        try:
            return parse_response(self.call(data, timeout=BOUND))
        except grpc.RpcError as error:
            return error

    def token_state(self, headers: Any) -> str:
        return token_state(headers, self.valid)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    attacker = make_key("RS256", kid="attacker")
    with JwksServer(keys=[attacker]) as evil:
        ctx = Ctx(make_key("RS256", kid="rsa-1"), make_key("ES256", kid="ec-1"), attacker, evil)
        directory: Path = tmp_path_factory.mktemp("wire-policies")
        keys = directory.parent / "wire-jwks.json"
        keys.write_text(jwks_json(ctx.rsa, ctx.ec))
        (directory / "shop.yaml").write_text(policy_yaml(issuer=ISS, jwks_file=str(keys)))
        with ServiceProcess(directory) as service:
            target = Target(service, ctx)
            yield target
            target.channel.close()
            assert service.process is not None and service.process.poll() is None, (
                "the service died"
            )
        assert evil.fetches == 0


def _base_requests(target: Target) -> list[bytes]:
    token = sorted(target.valid)[0]
    return [
        check_request("GET", HOST, "/public/a").SerializeToString(),
        check_request(
            "POST", HOST, "/api/orders/1", {"authorization": f"Bearer {token}"}
        ).SerializeToString(),
        check_request("GET", HOST, "/admin/users").SerializeToString(),
        check_request(
            "GET", HOST, "/api/x", {"authorization": "Bearer abc.def.ghi"}
        ).SerializeToString(),
        check_request(
            "GET", HOST, "/public/../admin", {"cookie": "a=b", "x-forwarded-for": "1.2.3.4"}
        ).SerializeToString(),
    ]


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(7)
        if not out:
            out = bytearray(rng.randbytes(8))
        at = rng.randrange(len(out))
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at] = rng.randrange(256)
        elif kind == 2:
            del out[at : at + rng.randrange(1, 16)]
        elif kind == 3:
            out[at:at] = rng.randbytes(rng.randrange(1, 16))
        elif kind == 4:
            out = out[:at]
        elif kind == 5:
            # Protobuf merges concatenated messages: the later one's scalars win.
            out += rng.choice(pool)
        else:
            chunk = bytes(out[at : at + rng.randrange(1, 64)])
            out[at:at] = chunk
    return bytes(out)


def _structured(rng: random.Random, target: Target) -> bytes:
    paths = [raw for _, raw, _ in CORPUS] + [
        "/public/x",
        "/api/y",
        "/admin",
        "/public/%2e%2e/admin",
    ]
    method = rng.choice(["GET", "POST", "get", "DELETE", "", "G\x00ET", "CONNECT", "x" * 300])
    host = rng.choice(
        [
            HOST,
            HOST.upper(),
            HOST + ":443",
            HOST + ".",
            "evil.example",
            "",
            "[::1]",
            "shop.example.com\x00.evil",
        ]
    )
    headers: dict[str, str] = {}
    for _ in range(rng.randrange(0, 6)):
        name = rng.choice(
            [
                "authorization",
                "x-authz-principal",
                "x-user-id",
                "cookie",
                ":path",
                "Authorization",
                "",
                "x-\x00",
                "a" * 100,
            ]
        )
        headers[name] = rng.choice(
            ["Bearer " + rng.choice(sorted(target.valid)), "Bearer x", "", "\x00", "é" * 10]
        )
    return bytes(check_request(method, host, rng.choice(paths), headers).SerializeToString())


def _oracle_allows(message: Any, target: Target) -> bool:
    """Does the policy allow the decoded request, under either spelling Envoy gives of it
    (the http fields, or the pseudo-headers in the map)?"""
    http = message.attributes.request.http
    state = target.token_state(http.headers)
    paths = {http.path, http.headers.get(":path", http.path)}
    hosts = {http.host, http.headers.get(":authority", http.host)}
    methods = {http.method, http.headers.get(":method", http.method)}
    return any(oracle(m, h, p, state).allowed for m in methods for h in hosts for p in paths)


def test_random_and_mutated_bytes_never_allow_wrongly(target: Target) -> None:
    external_auth_pb2, _ = protos()
    rng = random.Random(SEED)
    pool = _base_requests(target)
    inputs: list[tuple[str, bytes]] = []
    inputs += [("random", rng.randbytes(rng.randrange(0, 2048))) for _ in range(100)]
    inputs += [("mutated", _mutate(rng, rng.choice(pool), pool)) for _ in range(200)]
    inputs += [("structured", _structured(rng, target)) for _ in range(150)]
    inputs += [("concatenated", pool[0] + pool[2]), ("concatenated", pool[2] + pool[0])]
    outcomes: Counter[str] = Counter()
    for kind, data in inputs:
        answer = target.send(data)
        if isinstance(answer, grpc.RpcError):
            code = answer.code()
            # Refused: fine, unless it is the bound we hit (the call was never answered).
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{kind}: no answer within {BOUND} s"
            outcomes[f"refused:{code.name}"] += 1
            continue
        if answer.status.code != 0:
            outcomes["denied"] += 1
            assert response_status(answer) in (400, 401, 403, 431, 500, 503), answer
            continue
        outcomes["allowed"] += 1
        try:
            message = external_auth_pb2.CheckRequest.FromString(data)
        except Exception as error:
            pytest.fail(f"{kind}: undecodable bytes were allowed: {data!r} ({error})")
        assert _oracle_allows(message, target), f"{kind}: allowed, the policy does not: {message}"
    print(dict(outcomes))
    # The server keeps serving, and still decides correctly.
    ok = target.send(pool[0])
    assert not isinstance(ok, grpc.RpcError) and ok.status.code == 0
    denied = target.send(pool[2])
    assert not isinstance(denied, grpc.RpcError) and denied.status.code != 0


@pytest.mark.parametrize(
    ("what", "headers", "path"),
    [
        ("one 1 MiB header", {"x-big": "a" * (1024 * 1024)}, "/public/x"),
        ("a 1 MiB bearer token", {"authorization": "Bearer " + "a" * (1024 * 1024)}, "/public/x"),
        ("5,000 headers", {f"x-h{i}": "v" for i in range(5000)}, "/public/x"),
        (
            "headers just over the total size",
            {f"x-h{i}": "v" * 1000 for i in range(70)},
            "/public/x",
        ),
        ("a 100 KiB path", {}, "/public/" + "a" * (100 * 1024)),
        ("a path one byte over the limit", {}, "/public/" + "a" * (8 * 1024 - len("/public/") + 1)),
    ],
)
def test_oversized_requests_are_denied_with_a_reason(
    target: Target, what: str, headers: dict[str, str], path: str
) -> None:
    answer = target.send(check_request("GET", HOST, path, headers).SerializeToString())
    assert not isinstance(answer, grpc.RpcError), f"{what}: refused instead of denied: {answer}"
    assert answer.status.code != 0, what
    assert metadata_reason(answer) == "request_too_large", (what, metadata_reason(answer))
    assert response_status(answer) == 431


def test_a_path_at_the_limit_is_judged(target: Target) -> None:
    path = "/public/" + "a" * (8 * 1024 - len("/public/"))
    answer = target.send(check_request("GET", HOST, path).SerializeToString())
    assert not isinstance(answer, grpc.RpcError) and answer.status.code == 0


def test_a_message_over_the_grpc_limit_is_refused(target: Target) -> None:
    answer = target.send(
        check_request(
            "GET", HOST, "/public/x", {"x-big": "a" * (9 * 1024 * 1024)}
        ).SerializeToString()
    )
    assert isinstance(answer, grpc.RpcError) or answer.status.code != 0


@pytest.mark.parametrize(("attack", "raw", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_path_corpus_through_the_process(
    target: Target, attack: str, raw: str, expected: str
) -> None:
    answer = target.send(check_request("GET", HOST, raw).SerializeToString())
    assert not isinstance(answer, grpc.RpcError), f"{attack}: refused: {answer}"
    want = oracle("GET", HOST, raw, NONE)
    assert (answer.status.code == 0) == want.allowed, attack
    assert response_status(answer) == want.status, (attack, metadata_reason(answer))
    if want.status == 400:
        # An empty :path is refused before normalization, as a bad request.
        assert metadata_reason(answer) == ("bad_request" if raw == "" else "invalid_path")


@pytest.mark.parametrize(("attack", "meaning", "make", "reason"), CASES, ids=[c[0] for c in CASES])
def test_token_corpus_through_the_process(
    target: Target, attack: str, meaning: str, make: Any, reason: str
) -> None:
    token = make(target.ctx)
    if attack == "expired":
        # The corpus uses a fixed future "now"; the process uses the real clock.
        token = target.ctx.rsa.sign(claims(ISS, now=time.time() - 3600, audience=AUDIENCE))
    for path in ("/api/orders", "/public/x"):
        answer = target.send(
            check_request(
                "GET", HOST, path, {"authorization": f"Bearer {token}"}
            ).SerializeToString()
        )
        assert not isinstance(answer, grpc.RpcError), f"{attack}: refused: {answer}"
        assert answer.status.code != 0, f"{attack} allowed on {path}"
        got = metadata_reason(answer)
        if got == "request_too_large":  # a token over the header limit never reaches the verifier
            continue
        assert (response_status(answer), got) == (401, reason), attack
        challenge = [
            h.header.value
            for h in answer.denied_response.headers
            if h.header.key.lower() == "www-authenticate"
        ]
        assert challenge and 'error="invalid_token"' in challenge[0]
        # The body names no rule and no claim.
        body = json.loads(answer.denied_response.body or "{}")
        assert set(body) <= {"error", "decision_id"}
