"""The one checkpoint both doors call: a request that cannot be read is refused, anything
unexpected is a deny built from constants, observers and the tracer see every check and their
faults change nothing, and a deferred key wait goes back to the door."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from authz.checkpoint import Checkpoint
from authz.config import Settings
from authz.engine import Engine
from authz.errors import InvalidPath
from authz.identity import KeyRegistry, KeysPending
from authz.identity.sources import ServiceResolver
from authz.model import Request, Verdict
from authz.policy import PolicyStore, build_policy_set

POLICY = """
rules:
  - {name: open, action: allow, to: [{paths: [/open]}]}
"""


@pytest.fixture
def engine() -> Engine:
    policy_set = build_policy_set([("p.yaml", POLICY, ".")])
    return Engine(PolicyStore(policy_set), ServiceResolver(Settings(), KeyRegistry()))


Seen = list[tuple[Request | None, str, str]]


def _answer(verdict: Verdict) -> str:
    return f"{verdict.decision.status} {verdict.decision.reason}"


def _error(decision_id: str) -> str:
    return f"internal {decision_id}"


def test_a_check_is_answered_observed_and_traced(engine: Engine) -> None:
    seen: Seen = []
    carriers: list[Mapping[str, str] | None] = []

    def observe(request: Request | None, verdict: Verdict, seconds: float) -> None:
        assert seconds >= 0
        seen.append((request, verdict.decision.reason, "observer"))

    def broken(request: Request | None, verdict: Verdict, seconds: float) -> None:
        raise RuntimeError("an observer's bug")

    def trace(
        request: Request | None,
        verdict: Verdict,
        seconds: float,
        carrier: Mapping[str, str] | None,
    ) -> None:
        carriers.append(carrier)

    checkpoint = Checkpoint(engine, (broken, observe), trace)
    request = Request("GET", "/open", "h")
    answer = checkpoint.run(lambda: request, _answer, _error, carrier={"traceparent": "x"})
    assert answer == "200 open"
    assert seen == [(request, "open", "observer")]
    assert carriers == [{"traceparent": "x"}]


def test_an_unreadable_request_is_refused_with_its_reason(engine: Engine) -> None:
    seen: Seen = []
    checkpoint = Checkpoint(engine, (lambda r, v, s: seen.append((r, v.decision.reason, "")),))

    def unreadable() -> Request:
        raise InvalidPath("encoded '/' in path")

    assert checkpoint.run(unreadable, _answer, _error, source=lambda: "10.0.0.1") == (
        "400 invalid_path"
    )
    assert seen == [(None, "invalid_path", "")]


def test_anything_unexpected_is_a_deny_and_never_reaches_an_observer(engine: Engine) -> None:
    seen: Seen = []
    checkpoint = Checkpoint(engine, (lambda r, v, s: seen.append((r, "", "")),))

    def bug() -> Request:
        raise KeyError("a bug in a door")

    def bad_answer(verdict: Verdict) -> str:
        raise ValueError("a bug writing the answer")

    assert checkpoint.run(bug, _answer, _error).startswith("internal ")
    request = Request("GET", "/open", "h")
    assert checkpoint.run(lambda: request, bad_answer, _error).startswith("internal ")
    assert seen == []


def test_an_allow_the_door_cannot_carry_out_is_answered_as_the_door_says(engine: Engine) -> None:
    def refuse_all(verdict: Verdict) -> Verdict:
        return Checkpoint(engine).engine.refuse(InvalidPath("x"))

    request = Request("GET", "/open", "h")
    answer = Checkpoint(engine).run(lambda: request, _answer, _error, expressible=refuse_all)
    assert answer == "400 invalid_path"


def test_a_deferred_key_wait_goes_back_to_the_door(engine: Engine) -> None:
    # With KeyWait.DEFER the engine raises KeysPending (tests/unit/identity cover when): the
    # checkpoint passes it to the door, which awaits the refetch, rather than denying.
    def pending() -> Request:
        raise KeysPending(None)  # type: ignore[arg-type]

    with pytest.raises(KeysPending):
        Checkpoint(engine).run(pending, _answer, _error)
