"""In-process benches (no gRPC): the policy engine by rule count, and identity per algorithm.

* engine: `evaluate` and `Engine.check` on a prepared Request, policy sets of 10 .. 10,000
  rules, all sets measured alternately in the same rounds;
* identity: a check's JWT cost, cold (a fresh token each call, so the signature is verified)
  and warm (the same token: a cache hit), per algorithm, against the same check without a token;
* the whole in-process check (`AuthorizationService.check`: wire in, engine, wire out) with and
  without a warm token, which is what "a warm-cache JWT adds <= 5% to a check" is measured on.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore, evaluate, load_policy_set
from authz.server import AuthorizationService
from authz.wire.inbound import to_request
from bench import fixtures
from bench.timing import Result, alternate


@dataclass(slots=True)
class Harness:
    """A policy directory, its engine and service, and the keys its provider trusts."""

    engine: Engine
    service: AuthorizationService
    registry: KeyRegistry
    settings: Settings

    def close(self) -> None:
        self.registry.close()


def harness(
    root: Path, n_rules: int, keys: list[fixtures.Key], *, decision_cache: bool = False
) -> Harness:
    """Without the decision cache unless asked: the other benches measure a whole check."""
    directory = fixtures.write_policies(root / f"rules-{n_rules}-{decision_cache}", n_rules, keys)
    policy_set = load_policy_set(directory)
    registry = KeyRegistry()
    registry.ensure(policy_set.jwt_providers)
    if not registry.wait_ready(10):
        raise RuntimeError("the bench JWKS file did not load")
    settings = Settings(policies=str(directory))
    engine = Engine(
        PolicyStore(policy_set),
        ServiceResolver(settings, registry),
        decision_cache=decision_cache,
    )
    return Harness(engine, AuthorizationService(engine, settings), registry, settings)


def repeat(fn: Callable[[], object]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def engine_by_rules(
    rule_counts: tuple[int, ...], *, calls: int, rounds: int
) -> tuple[dict[str, Result], dict[str, Result]]:
    """Seconds per decision for each rule count: (`evaluate` alone, `Engine.check`).

    The request is the realistic one as a Request, with the mTLS principal and no token, so
    this is the policy's cost, not JWT verification's."""
    keys = [fixtures.make_key("ES256")]
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        harnesses = {n: harness(Path(tmp), n, keys) for n in rule_counts}
        try:
            limits = Settings().limits
            request = to_request(fixtures.check_request(None), limits)
            evaluate_variants: dict[str, Callable[[int], None]] = {}
            check_variants: dict[str, Callable[[int], None]] = {}
            for n, h in harnesses.items():
                host_policy = h.engine._store.current.for_host(request.host)
                identity = h.engine._resolver.resolve(
                    request, host_policy.authentication, time.time()
                )  # type: ignore[union-attr]
                assert evaluate(host_policy, request, identity).allowed
                assert h.engine.check(request).decision.allowed
                evaluate_variants[f"{n}"] = repeat(
                    lambda hp=host_policy, i=identity: evaluate(hp, request, i)
                )
                check_variants[f"{n}"] = repeat(lambda e=h.engine: e.check(request))
            evaluated = alternate(evaluate_variants, calls=calls, rounds=rounds)
            checked = alternate(check_variants, calls=calls, rounds=rounds)
        finally:
            for h in harnesses.values():
                h.close()
    return evaluated, checked


def identity_by_algorithm(*, calls: int, rounds: int) -> dict[str, Result]:
    """Seconds per `Engine.check` of the realistic Request (1,000 rules) for: no token (the
    baseline), and per algorithm a warm token (cache hit) and a cold one (verified)."""
    keys = [fixtures.make_key(alg) for alg in fixtures.ALGORITHMS]
    limits = Settings().limits
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        h = harness(Path(tmp), 1000, keys)
        try:

            def request_with(token: str | None) -> Request:
                return to_request(fixtures.check_request(token), limits)

            no_token = request_with(None)
            variants: dict[str, Callable[[int], None]] = {
                "no token": repeat(lambda r=no_token: h.engine.check(r)),
            }
            for key in keys:
                warm = request_with(key.token())
                assert h.engine.check(warm).request_principal, key.alg
                variants[f"{key.alg} warm"] = repeat(lambda r=warm: h.engine.check(r))
                # Cold: every call sees a token never seen before (distinct jti), so the cache
                # misses and the signature is verified. Tokens are signed ahead of time.
                needed = calls * (rounds + 1) + calls // 10 + 1
                cold = iter(
                    [request_with(key.token(jti=fixtures.random_jti())) for _ in range(needed)]
                )

                def run_cold(n: int, it: itertools.chain[Request] | object = cold) -> None:
                    for _ in range(n):
                        h.engine.check(next(it))  # type: ignore[call-overload]

                variants[f"{key.alg} cold"] = run_cold
            return alternate(variants, calls=calls, rounds=rounds)
        finally:
            h.close()


def full_check(*, calls: int, rounds: int) -> dict[str, Result]:
    """Seconds per `AuthorizationService.check(CheckRequest)` (wire in, engine, wire out) of the
    realistic request, with a warm RS256 token and without (allowed by the mTLS principal)."""
    key = fixtures.make_key("RS256")
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        h = harness(Path(tmp), 1000, [key])
        try:
            with_token = fixtures.check_request(key.token())
            without = fixtures.check_request(None)
            assert h.service.check(with_token).HasField("ok_response")
            assert h.service.check(without).HasField("ok_response")
            return alternate(
                {
                    "check, mTLS only": repeat(lambda: h.service.check(without)),
                    "check, mTLS + warm RS256": repeat(lambda: h.service.check(with_token)),
                },
                calls=calls,
                rounds=rounds,
            )
        finally:
            h.close()


def decision_cache(*, calls: int, rounds: int) -> dict[str, Result]:
    """Seconds per check of the realistic request (1,000 rules, RS256 token) with the decision
    cache and without ("today"): a hit; a miss whose token is verified-cache warm (a new path
    every call); a miss with a new token every call (signature verified); and the whole
    in-process `AuthorizationService.check` (wire in and out) on a hit vs today."""
    key = fixtures.make_key("RS256")
    limits = Settings().limits
    token = key.token(lifetime=6 * 3600)
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        today = harness(Path(tmp), 1000, [key])
        cached = harness(Path(tmp), 1000, [key], decision_cache=True)
        try:
            message = fixtures.check_request(token)
            request = to_request(message, limits)
            assert today.engine.check(request).decision.allowed
            assert cached.engine.check(request).decision.allowed
            needed = calls * (rounds + 1) + calls // 10 + 1

            def paths() -> Iterator[Request]:
                for i in itertools.count():
                    yield replace(request, path=f"/api/orders/{i}")

            def fresh_tokens() -> Iterator[Request]:
                signed = [key.token(jti=fixtures.random_jti()) for _ in range(needed)]
                for t in signed:
                    yield to_request(fixtures.check_request(t), limits)

            def each(engine: Engine, source: Iterator[Request]) -> Callable[[int], None]:
                def run(n: int) -> None:
                    for _ in range(n):
                        engine.check(next(source))

                return run

            variants: dict[str, Callable[[int], None]] = {
                "today: Engine.check, warm token": repeat(lambda: today.engine.check(request)),
                "cache hit: Engine.check": repeat(lambda: cached.engine.check(request)),
                "today: new path every call": each(today.engine, paths()),
                "cache miss: new path every call": each(cached.engine, paths()),
                "today: new token every call": each(today.engine, fresh_tokens()),
                "cache miss: new token every call": each(cached.engine, fresh_tokens()),
                "today: AuthorizationService.check": repeat(lambda: today.service.check(message)),
                "cache hit: AuthorizationService.check": repeat(
                    lambda: cached.service.check(message)
                ),
            }
            return alternate(variants, calls=calls, rounds=rounds)
        finally:
            today.close()
            cached.close()
