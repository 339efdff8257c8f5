"""`authz test` / `authz explain` and the service agree: a generated corpus of requests (API
keys known and unknown, JWTs of several issuers in several locations, expired and wrong-audience
tokens, opaque introspected tokens, rate limits counted across the corpus) is decided by the
service's engine on real credentials and by `explain_scenario` on the same requests as a policy
test gives them; every decision, status and principal must be the same."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from authz.authoring.scenario import Scenario, explain_scenario
from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.apikeys import key_hash
from authz.identity.introspection import Answer
from authz.identity.jwt import KeyWait
from authz.identity.sources import ServiceResolver
from authz.limits import Limiter, LocalCounter
from authz.model import Request
from authz.policy import PolicyStore, load_policy_set
from authz.policy.language.spec import IntrospectionProvider
from tests.support.tokens import claims, jwks_json, make_key

NOW = 1_800_000_000.0
HOST = "api.example.com"
ONE, TWO = "https://one.example", "https://two.example"
KINDS = ["none", "key", "key", "key", "bad-key", "one", "two", "one-expired", "one-aud", "x",
         "opaque", "opaque-inactive", "key+one"]  # fmt: skip
KEYS = {"acme-1": "key-acme-1-aaaaaaaaaaaa", "beta-2": "key-beta-2-bbbbbbbbbbbb"}


class EndpointOf:
    """Introspection answers held in memory for the service side (the HTTPS endpoint itself is
    tested in test_introspection.py): the routing, claims and checks around it are the real ones."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self._answers = answers

    def answer(self, provider: IntrospectionProvider, token: str, wait: KeyWait) -> Answer:
        given = self._answers.get(token, {"active": False})
        rest = {k: v for k, v in given.items() if k != "active"}
        return Answer(bool(given["active"]), rest, NOW + 60)


def _policy(one: str, two: str) -> str:
    return f"""
hosts: [{HOST}]
authentication:
  jwt:
    - issuer: {ONE}
      audiences: [api]
      jwks: {one!r}
      claims_to_headers: {{sub: x-user}}
    - issuer: {TWO}
      jwks: {two!r}
      from: [{{cookie: session}}, {{header: x-token}}]
  introspection:
    - name: corp
      endpoint: https://introspect.example/i
      issuer: https://corp.example
      client_id: authz
      client_secret_env: NOT_USED_HERE
      from: [{{header: x-opaque}}]
  api_keys:
    - name: partners
      from: [{{header: x-api-key}}]
      keys_file: partners.keys.yaml
rules:
  - name: no-admin
    action: deny
    to: [{{paths: ["/admin/{{**}}"]}}]
  - name: partners-read
    action: allow
    from: [{{api_keys: ["partners/*"]}}]
    to: [{{methods: [GET], paths: ["/data/{{**}}"]}}]
  - name: one-carts
    action: allow
    from: [{{issuers: [{ONE}]}}]
    to: [{{paths: ["/cart/{{**}}"]}}]
    when: [{{claim: scope, contains: cart}}]
  - name: two-anything
    action: allow
    from: [{{request_principals: ["{TWO}/*"]}}]
    to: [{{paths: ["/two/{{**}}", "/cart/{{**}}"]}}]
  - name: corp-reads
    action: allow
    from: [{{issuers: [https://corp.example]}}]
    to: [{{methods: [GET]}}]
    when: [{{claim: scope, contains: read}}]
rate_limits:
  - name: per-key
    to: [{{paths: ["/data/{{**}}"]}}]
    key: api_key
    limit: 3
    per: minute
  - name: per-user
    key: request_principal
    limit: 2
    per: minute
"""


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    one, two = make_key("ES256"), make_key("RS256")
    (tmp_path / "p.yaml").write_text(_policy(jwks_json(one), jwks_json(two)))
    lines = "".join(f"  - {{id: {i}, sha256: {key_hash(k)}}}\n" for i, k in KEYS.items())
    (tmp_path / "partners.keys.yaml").write_text("keys:\n" + lines)
    return {"dir": str(tmp_path), "one": one, "two": two}


def _corpus(world: dict[str, Any], rng: random.Random, n: int) -> list[dict[str, Any]]:
    cases = []
    for i in range(n):
        case: dict[str, Any] = {
            "method": rng.choice(["GET", "GET", "POST"]),
            "path": rng.choice(
                ["/data/x", "/data/y", "/data/z", "/cart/a", "/two/b", "/admin/z", "/other"]
            ),
        }
        kind = rng.choice(KINDS)
        if kind in ("key", "key+one"):
            case["api_key"] = rng.choice(list(KEYS))
        if kind == "bad-key":
            case["api_key"] = "nobody"
        if kind in ("one", "one-expired", "one-aud", "key+one", "two", "x"):
            issuer = {"two": TWO, "x": "https://unknown.example"}.get(kind, ONE)
            payload = claims(
                issuer,
                now=NOW,
                subject=rng.choice(["alice", "bob"]),
                audience="api" if kind != "one-aud" else "other",
                lifetime=300 if kind != "one-expired" else -3600,
                scope=rng.choice(["cart", "read", "cart read"]),
            )
            case["claims"] = payload
        if kind.startswith("opaque"):
            case["opaque"] = {
                "active": kind == "opaque",
                "sub": rng.choice(["carol", "dan"]),
                "scope": rng.choice(["read", "write"]),
            }
            case["opaque_token"] = f"opaque-{i}"
        cases.append(case)
    return cases


def _service_request(world: dict[str, Any], case: dict[str, Any]) -> Request:
    headers: dict[str, str] = {}
    if "api_key" in case:
        headers["x-api-key"] = KEYS.get(case["api_key"], "an-unknown-key")
    payload = case.get("claims")
    if payload is not None:
        if payload["iss"] == TWO:
            headers["cookie"] = "session=" + world["two"].sign(payload)
        else:
            headers["authorization"] = "Bearer " + world["one"].sign(payload)
    if "opaque_token" in case:
        headers["x-opaque"] = case["opaque_token"]
    return Request(case["method"], case["path"], HOST, raw_path=case["path"], headers=headers)


def _scenario(case: dict[str, Any]) -> Scenario:
    key = case.get("api_key")
    return Scenario(
        method=case["method"],
        path=case["path"],
        host=HOST,
        claims=case.get("claims"),
        api_key=f"partners/{key}" if key is not None else None,
        introspection=case.get("opaque"),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tools_and_service_decide_a_generated_corpus_alike(
    world: dict[str, Any], seed: int
) -> None:
    rng = random.Random(seed)
    corpus = _corpus(world, rng, 150)
    policy_set = load_policy_set(world["dir"])
    registry = KeyRegistry()
    registry.ensure(policy_set.jwt_providers)
    answers = {c["opaque_token"]: c["opaque"] for c in corpus if "opaque_token" in c}
    resolver = ServiceResolver(Settings(), registry, introspection=EndpointOf(answers))
    service = Engine(
        PolicyStore(policy_set),
        resolver,
        clock=lambda: NOW,
        limiter=Limiter(LocalCounter(), clock=lambda: NOW),
    )
    tool_counter = Limiter(LocalCounter(), clock=lambda: NOW)
    seen: set[str] = set()
    try:
        for case in corpus:
            verdict = service.check(_service_request(world, case))
            told = explain_scenario(policy_set, _scenario(case), NOW, tool_counter)
            got = (told.decision.allowed, told.decision.status, told.decision.reason)
            want = (verdict.decision.allowed, verdict.decision.status, verdict.decision.reason)
            assert got == want, case
            assert (told.request_principal or "") == verdict.request_principal, case
            assert (told.api_key_principal or "") == verdict.api_key_principal, case
            seen.add(verdict.decision.reason)
    finally:
        registry.close()
    # The corpus reached every kind of answer it is meant to exercise.
    for reason in ("partners-read", "one-carts", "two-anything", "corp-reads", "no-admin",
                   "per-key", "per-user", "api_key_invalid", "jwt_unknown_issuer",
                   "jwt_expired", "jwt_bad_audience", "token_inactive"):  # fmt: skip
        assert reason in seen, (reason, sorted(seen))
