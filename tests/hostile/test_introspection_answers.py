"""Adversarial introspection answers (RFC 7662 section 2.2 says little about member types): an
active answer whose members are of the wrong type, or missing, never allows; an allowed request
always has a string `sub` and an `exp` (when present) in the future, and the tools
(`explain_scenario` with the same answer) decide it the same way."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from authz.authoring.scenario import Scenario, explain_scenario
from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.introspection import Answer
from authz.identity.jwt import KeyWait
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore, load_policy_set
from authz.policy.language.spec import IntrospectionProvider

NOW = 1_800_000_000.0
POLICY = """
hosts: [api.example.com]
authentication:
  introspection:
    - {name: corp, endpoint: "https://id.example.com/i", issuer: "https://id.example.com",
       client_id: a, client_secret_env: S, audiences: [api], claims_to_headers: {sub: x-user}}
rules:
  - name: users
    action: allow
    from: [{request_principals: ["https://id.example.com/*"]}]
    when: [{claim: scope, contains: read}]
"""
VALUES: list[Any] = [
    None, "", "alice", "bob\r\nx-admin: 1", 7, 1.5, True, [], ["read"], {}, {"a": 1},
    "read", "read write", NOW + 600, NOW - 600, str(NOW + 600), float("nan"), "api", ["api", "x"],
    "https://id.example.com", "https://evil.example",
]  # fmt: skip


class Fixed:
    def __init__(self) -> None:
        self.given: dict[str, Any] = {}

    def answer(self, provider: IntrospectionProvider, token: str, wait: KeyWait) -> Answer:
        rest = {k: v for k, v in self.given.items() if k != "active"}
        return Answer(self.given.get("active") is True, rest, NOW + 60)


GOOD: dict[str, Any] = {
    "active": True,
    "sub": "alice",
    "iss": "https://id.example.com",
    "scope": "read write",
    "exp": NOW + 600,
    "aud": "api",
}


def _random_answer(rng: random.Random) -> dict[str, Any]:
    """A good answer with some members dropped or replaced by anything."""
    answer = dict(GOOD)
    answer["active"] = rng.choice([True, True, True, False, "true", 1])
    for member in ("sub", "iss", "scope", "exp", "nbf", "aud"):
        roll = rng.random()
        if roll < 0.1:
            answer.pop(member, None)
        elif roll < 0.3:
            answer[member] = rng.choice(VALUES)
    return answer


def test_random_answers_never_allow_what_a_jwt_would_not(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    policy_set = load_policy_set(str(tmp_path))
    endpoint = Fixed()
    engine = Engine(
        PolicyStore(policy_set),
        ServiceResolver(Settings(), KeyRegistry(), introspection=endpoint),
        clock=lambda: NOW,
        decision_cache=False,
    )
    rng = random.Random(7)
    allowed = 0
    for _ in range(2000):
        answer = _random_answer(rng)
        endpoint.given = answer
        request = Request("GET", "/x", "api.example.com", headers={"authorization": "Bearer op"})
        verdict = engine.check(request)
        told = explain_scenario(
            policy_set, Scenario("GET", "/x", "api.example.com", introspection=answer), NOW
        )
        assert (told.decision.allowed, told.decision.reason) == (
            verdict.decision.allowed,
            verdict.decision.reason,
        ), answer
        if verdict.decision.allowed:
            allowed += 1
            assert answer["active"] is True
            sub = answer.get("sub")
            assert isinstance(sub, str) and sub and "\r" not in sub and "\n" not in sub
            assert answer.get("iss", "https://id.example.com") == "https://id.example.com"
            # As for a JWT: no exp (or null) never expires; a present one is a future number.
            exp = answer.get("exp")
            assert exp is None or (isinstance(exp, float) and exp > NOW - 60)
            assert answer.get("aud") in ("api", ["api", "x"])
            assert dict(verdict.headers_to_set)["x-user"] == answer["sub"]
        elif verdict.decision.status == 401:
            assert verdict.decision.challenge is not None
    assert allowed > 10  # the generator reaches allows too
