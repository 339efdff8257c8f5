"""Replay on a randomized log made by the real engine and the real decision-log record code.

10,000 requests (seeded): workloads of several trust domains, customer tokens with various
scopes, expired, for another audience or tampered, odd paths and refused ones. Replaying them
under the unchanged set must flip nothing; without one allow rule exactly the requests that
rule allowed must flip.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from authz.audit.replay import ALLOW_TO_DENY, DENY_TO_ALLOW, STATUS, redecide, replay
from authz.config import Settings
from authz.engine import Engine
from authz.errors import AuthzError
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.observe.decision_log import decision_record
from authz.policy import PolicyStore, load_policy_set
from authz.request.paths import normalize_path
from bench.audit_log import random_token

REPO = Path(__file__).resolve().parents[3]
DEMO_KEY = (REPO / "examples/demo-issuer/private-key.pem").read_text()
ISSUER = "https://id.shop.example"
COUNT = 10_000

PRINCIPALS = [
    "",
    "spiffe://cluster.local/ns/shop/sa/frontend",
    "spiffe://cluster.local/ns/shop/sa/orders",
    "spiffe://cluster.local/ns/ops/sa/console",
    "spiffe://evil.example/ns/shop/sa/frontend",
]
PATHS = [
    "/healthz",
    "/readyz?verbose=1",
    "/api/orders",
    "/api/orders/42",
    "/api/orders/42/items",
    "/api/cart/items",
    "/api/cart/../orders/7",
    "/api/payments",
    "/api/payments/p-1/capture",
    "/api/payments/p-1/refund",
    "/admin/stats",
    "/debug/pprof",
    "/actuator;x=1/env",
    "/api/orders%2F42",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
HOSTS = ["shop.example.com", "orders.shop.svc.cluster.local", "unknown.example.org"]


def make_log(policies: Path, seed: int = 18) -> list[dict[str, Any]]:
    """COUNT records as the service writes them: the real engine, the real record code."""
    policy_set = load_policy_set(policies)
    keys = KeyRegistry()
    keys.ensure(policy_set.jwt_providers)
    assert keys.wait_ready(10)
    try:
        engine = Engine(PolicyStore(policy_set), ServiceResolver(Settings(), keys))
        rng = random.Random(seed)
        now = int(time.time())
        records = []
        for i in range(COUNT):
            raw = rng.choice(PATHS)
            headers = {}
            bearer = random_token(rng, DEMO_KEY, now, ("alice", "bob", "carol"))
            if bearer is not None:
                headers["authorization"] = f"Bearer {bearer}"
            try:
                path, query = normalize_path(raw)
            except AuthzError as error:
                verdict = engine.refuse(error, "10.0.0.66")
                records.append(decision_record(now + i / 1000, None, verdict, 0.0))
                continue
            request = Request(
                method=rng.choice(METHODS),
                path=path,
                host=rng.choice(HOSTS),
                raw_path=raw,
                query=query,
                headers=headers,
                source_ip=f"10.0.0.{rng.randrange(1, 5)}",
                peer_principal=rng.choice(PRINCIPALS),
            )
            verdict = engine.check(request)
            records.append(decision_record(now + i / 1000, request, verdict, 0.0))
        # Through JSON, as the log file holds them.
        return [json.loads(json.dumps(r)) for r in records]
    finally:
        keys.close()


@pytest.fixture(scope="module")
def logged() -> list[dict[str, Any]]:
    return make_log(REPO / "policies")


def test_the_log_is_varied(logged: list[dict[str, Any]]) -> None:
    reasons = {r["reason"] for r in logged}
    for expected in (
        "frontend-reads-orders",
        "frontend-places-orders",
        "customers-use-cart",
        "customers-read-own-orders",
        "orders-takes-payments",
        "health-checks",
        "no-debug-endpoints",
        "no_matching_rule",
        "invalid_path",
        "jwt_expired",
        "jwt_bad_audience",
    ):
        assert expected in reasons
    assert {r.get("token") for r in logged} >= {"none", "verified", "rejected"}


def test_unchanged_policy_flips_nothing(logged: list[dict[str, Any]]) -> None:
    report = replay(load_policy_set(REPO / "policies"), logged)
    assert report.groups == {}
    assert report.rule_changes == 0
    assert report.replayed + report.not_replayable == COUNT
    assert report.not_replayable == sum(1 for r in logged if r["method"] is None)
    assert report.unchanged == report.replayed


def test_removing_one_allow_rule_flips_exactly_what_it_allowed(
    logged: list[dict[str, Any]], tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(REPO / "policies", candidate)
    shop = candidate / "shop.yaml"
    text = shop.read_text()
    start = text.index("  - name: frontend-places-orders")
    end = text.index("  - name: orders-takes-payments")
    shop.write_text(text[:start] + text[end:])
    policy_set = load_policy_set(candidate)

    allowed_by_rule = {r["decision_id"] for r in logged if r["rule"] == "frontend-places-orders"}
    assert len(allowed_by_rule) > 20
    flipped = set()
    for record in logged:
        new = redecide(policy_set, record)
        if new is not None and (new.allowed, new.status) != (
            record["decision"] == "allow",
            record["status"],
        ):
            flipped.add(record["decision_id"])
    assert flipped == allowed_by_rule

    report = replay(policy_set, logged)
    assert report.count(ALLOW_TO_DENY) == len(allowed_by_rule)
    assert report.count(DENY_TO_ALLOW) == report.count(STATUS) == 0
    assert list(report.groups) == [(ALLOW_TO_DENY, "frontend-places-orders")]


def test_a_logged_api_key_and_context_are_replayed() -> None:
    from authz.audit.replay import scenario_of

    record = {
        "method": "GET",
        "host": "h",
        "path": "/p",
        "token": "none",
        "api_key_principal": "partners/acme-1",
        "context": {"zone": "internal"},
    }
    scenario = scenario_of(record)
    assert scenario is not None
    assert scenario.api_key == "partners/acme-1" and scenario.context == {"zone": "internal"}
