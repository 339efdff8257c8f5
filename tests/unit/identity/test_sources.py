"""Identity sources are plug-ins: the resolver runs what a host's policy names, and a new kind of
credential is one new source (here, in this file) with nothing else changed: the engine, the
evaluator, the headers for the upstream and the decision log take its identity as they take a
JWT's."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from authz.config import Settings
from authz.engine import Engine
from authz.errors import TokenRejected
from authz.identity import KeyRegistry, KeyWait
from authz.identity.source import IdentitySource
from authz.identity.sources import (
    ApiKeySource,
    IntrospectionSource,
    JwtSource,
    PeerSource,
    ServiceResolver,
)
from authz.model import EndUser, Identity, Request
from authz.policy import PolicyStore, load_policy_set
from authz.policy.language.spec import Authentication

POLICY = """
hosts: [api.example.com]
rules:
  - name: robots-read
    action: allow
    from: [{request_principals: ["https://robots.example/*"]}]
    to: [{methods: [GET], paths: ["/r/{**}"]}]
"""


class RobotSource:
    """A made-up credential: `x-robot: <name>` from a trusted gateway. One class, nothing else."""

    name = "robot"

    def __init__(self) -> None:
        self.calls = 0

    def named_by(self, auth: Authentication) -> bool:
        return True

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        self.calls += 1
        robot = request.headers.get("x-robot")
        if robot is None:
            return None
        if not robot.isalnum():
            raise TokenRejected("not a robot name", reason="jwt_malformed")
        claims = MappingProxyType({"iss": "https://robots.example", "sub": robot})
        return Identity(user=EndUser("https://robots.example", robot, claims))

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        return (request.headers.get("x-robot", ""),)

    def state(self, auth: Authentication) -> tuple[object, ...]:
        return ()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Engine, RobotSource]:
    (tmp_path / "p.yaml").write_text(POLICY)
    robot = RobotSource()
    resolver = ServiceResolver(Settings(), KeyRegistry(), extra=(robot,))
    return Engine(PolicyStore(load_policy_set(str(tmp_path))), resolver), robot


def test_the_service_sources_follow_the_protocol() -> None:
    resolver = ServiceResolver(Settings(), KeyRegistry())
    kinds = [type(s) for s in resolver.sources]
    assert kinds == [PeerSource, JwtSource, IntrospectionSource, ApiKeySource]
    for source in resolver.sources:
        assert isinstance(source.name, str)
        _typed: IdentitySource = source  # mypy checks the protocol


def test_a_new_source_is_one_class_and_the_rest_follows(setup: tuple[Engine, RobotSource]) -> None:
    engine, _ = setup
    verdict = engine.check(Request("GET", "/r/a", "api.example.com", headers={"x-robot": "r2d2"}))
    assert verdict.decision.allowed and verdict.decision.reason == "robots-read"
    assert verdict.request_principal == "https://robots.example/r2d2"
    assert dict(verdict.headers_to_set)["x-authz-request-principal"] == verdict.request_principal
    assert verdict.evidence is not None and verdict.evidence.token == "verified"
    anonymous = engine.check(Request("GET", "/r/a", "api.example.com"))
    assert not anonymous.decision.allowed and anonymous.decision.reason == "no_matching_rule"


def test_a_new_source_refuses_as_the_others_do(setup: tuple[Engine, RobotSource]) -> None:
    engine, _ = setup
    verdict = engine.check(Request("GET", "/r/a", "api.example.com", headers={"x-robot": "a b"}))
    assert verdict.decision.status == 401 and verdict.decision.reason == "jwt_malformed"


def test_the_resolver_runs_only_the_sources_a_host_names() -> None:
    resolver = ServiceResolver(Settings(), KeyRegistry())
    named = [s.name for s in resolver.sources if s.named_by(Authentication())]
    assert named == ["mtls"]  # no jwt or api_keys provider: neither runs


def test_two_sources_filling_the_end_user_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    resolver = ServiceResolver(Settings(), KeyRegistry(), extra=(RobotSource(), RobotSource()))
    engine = Engine(PolicyStore(load_policy_set(str(tmp_path))), resolver)
    verdict = engine.check(Request("GET", "/r/a", "api.example.com", headers={"x-robot": "r2"}))
    assert verdict.decision.status == 401 and verdict.decision.reason == "jwt_malformed"
