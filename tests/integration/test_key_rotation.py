"""Key rotation in the real service process (issue 10.8): `python -m authz serve` with a provider
whose JWKS comes from a real JWKS server on loopback, checked over real gRPC.

The IdP rotates keys; the first token signed by the new key must be allowed (it used to get 401
while the refetch ran in the background), one fetch serves a flood of made-up kids, and checks
with known keys are answered while a refetch hangs.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.service import (
    AUDIENCE,
    HOST,
    check_request,
    parse_response,
    policy_yaml,
    response_status,
)
from tests.support.jwks_server import JwksServer
from tests.support.service import ServiceProcess
from tests.support.tokens import SigningKey, claims, make_key


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def old_key(jwks: JwksServer) -> SigningKey:
    key = make_key("ES256")
    jwks.rotate(key)
    return key


@pytest.fixture
def service(tmp_path: Path, jwks: JwksServer, old_key: SigningKey) -> Iterator[ServiceProcess]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(policy_yaml(issuer=jwks.issuer, jwks_uri=jwks.jwks_uri))
    with ServiceProcess(policies, extra_args=("--no-watch",)) as running:
        assert running_check(running, old_key, jwks) == 200  # keys loaded
        yield running


def token(key: SigningKey, jwks: JwksServer, kid: str | bool = True) -> str:
    return key.sign(claims(jwks.issuer, now=time.time(), audience=AUDIENCE), kid=kid)


def running_check(service: ServiceProcess, key: SigningKey, jwks: JwksServer) -> int:
    return status(service, token(key, jwks))


def status(service: ServiceProcess, raw_token: str) -> int:
    message = check_request("GET", HOST, "/api/orders", {"authorization": f"Bearer {raw_token}"})
    return response_status(parse_response(service.check_bytes(message.SerializeToString())))


def test_first_token_of_a_rotated_key_is_allowed(
    service: ServiceProcess, jwks: JwksServer, old_key: SigningKey
) -> None:
    new_key = make_key("ES256")
    jwks.rotate(old_key, new_key)
    before = jwks.fetches
    assert status(service, token(new_key, jwks)) == 200
    assert jwks.fetches == before + 1
    assert status(service, token(old_key, jwks)) == 200


def test_made_up_kids_cost_at_most_one_fetch(
    service: ServiceProcess, jwks: JwksServer, old_key: SigningKey
) -> None:
    before = jwks.fetches
    tokens = [token(old_key, jwks, kid=f"made-up-{i}") for i in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: status(service, t), tokens))
    assert answers == [401] * 1000
    assert jwks.fetches - before <= 1


def test_known_keys_are_answered_while_a_refetch_hangs(
    service: ServiceProcess, jwks: JwksServer, old_key: SigningKey
) -> None:
    jwks.hold()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(status, service, token(old_key, jwks, kid="not-yet-published"))
            assert jwks.wait_for_fetches(jwks.fetches + 1)
            # Checks with known keys go on while the refetch hangs at the JWKS server.
            for _ in range(20):
                assert running_check(service, old_key, jwks) == 200
            jwks.release()
            assert waiting.result(timeout=30) == 401  # past its 0.2 s bound: refused
    finally:
        jwks.release()
