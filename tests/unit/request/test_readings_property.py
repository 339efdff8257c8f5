"""The per-field quantifiers against a reference that enumerates every reading of the whole
request: for generated rules and requests, a deny rule the reference says holds under some
reading must hold, and an allow rule that holds must hold under every reading. (Quantifying
field by field may only deny more and allow less than the reference, never the other way.)"""

from __future__ import annotations

import random

import pytest

from authz.model import ANONYMOUS, Request
from authz.policy import build_policy_set
from authz.policy.decide.context import RequestContext
from authz.policy.language.spec import Authentication
from authz.request.paths import normalize_path

PATHS = ["/admin", "/admin/{**}", "*.json", "/api/{*}", "/api/admin", "/app/{**}"]
PATH_SPELLINGS = [
    "/admin", "/admin;x=1", "/admin;a/b", "/api;v=1/admin", "/api/admin;j", "/data.json",
    "/secret;.json", "/x.json;v=2", "/app/admin;s", "/app;p/x", "/api/orders",
]  # fmt: skip
ROLES = ["guest", "admin", "ops"]
SEEDS = range(40)


def _rule(rng: random.Random, index: int) -> str:
    action = rng.choice(["allow", "deny"])
    to = rng.choice(["paths", "not_paths"])
    parts = [f'{{{to}: ["{rng.choice(PATHS)}"]}}']
    when = []
    if rng.random() < 0.6:
        op = rng.choice(["equals", "not_equals", "prefix", "any_of"])
        value = rng.choice(ROLES) if op != "any_of" else f"[{rng.choice(ROLES)}, ops]"
        when.append(f"{{header: x-role, {op}: {value}}}")
    if rng.random() < 0.4:
        op = rng.choice(["equals", "not_equals"])
        when.append(f"{{query: q, {op}: {rng.choice(ROLES)}}}")
    clause = f", when: [{', '.join(when)}]" if when else ""
    return f"  - {{name: r{index}, action: {action}, to: [{', '.join(parts)}]{clause}}}\n"


def _request(rng: random.Random) -> tuple[str, list[str], list[str]]:
    roles = rng.sample(ROLES, rng.randint(0, 2))
    query = [rng.choice(ROLES) for _ in range(rng.randint(0, 2))]
    return rng.choice(PATH_SPELLINGS), roles, query


def _ctx(path: str, roles: list[str], query: list[str]) -> RequestContext:
    normalized, _ = normalize_path(path)
    headers = {"x-role": ",".join(roles)} if roles else {}
    spelled = "&".join(f"{'q' if i % 2 == 0 else '%71'}={v}" for i, v in enumerate(query))
    request = Request("GET", normalized, "h", raw_path=path, query=spelled, headers=headers)
    return RequestContext(request, ANONYMOUS, Authentication())


@pytest.mark.parametrize("seed", SEEDS)
def test_quantified_rules_agree_with_every_reading_enumerated(seed: int) -> None:
    rng = random.Random(seed)
    text = "rules:\n" + "".join(_rule(rng, i) for i in range(6))
    host_policy = build_policy_set([("p.yaml", text, ".")]).for_host("h")
    assert host_policy is not None
    for _ in range(30):
        path, roles, query = _request(rng)
        ctx = _ctx(path, roles, query)
        readings = [
            (p, r, q) for p in ctx.paths for r in (roles or [None]) for q in (query or [None])
        ]
        for rule in host_policy.rules:
            outcomes = []
            for p, r, q in readings:
                one = _ctx(path, [r] if r else [], [q] if q else [])
                one.path, one.paths = p, (p,)
                outcomes.append(rule.matches(one))
            holds = rule.matches(ctx)
            case = f"{rule.spec} on {path} x-role={roles} q={query}"
            if rule.action == "deny" and any(outcomes):
                assert holds, case
            if rule.action == "allow" and holds:
                assert all(outcomes), case
