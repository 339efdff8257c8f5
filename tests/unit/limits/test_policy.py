"""The `rate_limits` section: validation with file:line, names shared with rules, and a
policy set whose limits the engine applies after an allow."""

from __future__ import annotations

import textwrap

import pytest

from authz.config import Settings
from authz.engine import Engine
from authz.errors import PolicyError
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore
from authz.policy.load.loader import build_policy_set

POLICY = """\
rules:
  - name: open
    action: allow
    to: [{paths: ["/{**}"]}]
  - name: admin-closed
    action: deny
    to: [{paths: ["/admin"]}]
rate_limits:
  - name: per-client
    to: [{paths: ["/api/{**}", "/admin"]}]
    key: header:X-Client
    limit: 3
    per: minute
  - name: watch-ips
    key: source_ip
    limit: 2
    per: second
    dry_run: true
"""


def policy(text: str = POLICY, name: str = "p.yaml") -> object:
    return build_policy_set([(name, textwrap.dedent(text), ".")])


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        policy(text)
    return [str(p) for p in caught.value.problems]


def engine(text: str = POLICY) -> Engine:
    store = PolicyStore(policy(text))  # type: ignore[arg-type]
    return Engine(store, ServiceResolver(Settings(), KeyRegistry()))


def request(path: str, client: str | None = "c1", ip: str = "10.0.0.1") -> Request:
    headers = {"x-client": client} if client else {}
    return Request("GET", path, "shop", raw_path=path, headers=headers, source_ip=ip)


def test_limits_apply_after_an_allow_and_answer_429() -> None:
    e = engine()
    verdicts = [e.check(request("/api/cart", ip=f"10.0.0.{i}")) for i in range(5)]
    assert [v.decision.status for v in verdicts] == [200, 200, 200, 429, 429]
    assert verdicts[3].decision.reason == "per-client"
    assert dict(verdicts[3].response_headers)["ratelimit-policy"] == '"per-client";q=3;w=60'
    # another key, a path no limit matches, a request without the key: not limited
    assert e.check(request("/api/cart", client="c2")).decision.allowed
    assert e.check(request("/public", ip="10.9.9.9")).decision.allowed
    assert e.check(request("/api/cart", client=None, ip="10.9.9.8")).decision.allowed


def test_denied_requests_are_not_counted() -> None:
    e = engine()
    for _ in range(10):
        assert e.check(request("/admin", ip="10.1.1.1")).decision.reason == "admin-closed"
    assert e.check(request("/api/x", ip="10.1.1.2")).decision.allowed


def test_dry_run_limits_only_say_would_limit() -> None:
    e = engine()
    verdicts = [e.check(request("/public", client=None)) for _ in range(3)]
    assert all(v.decision.allowed for v in verdicts)
    assert [m.rule for m in verdicts[2].decision.shadow] == ["watch-ips"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: x, key: ip, limit: 1, per: minute}", "p.yaml:3: key must be one of"),
        ("{name: x, key: source_ip, limit: 0, per: minute}", "p.yaml:3: limit must be"),
        ("{name: x, key: source_ip, limit: 5, per: day}", "p.yaml:3: per must be one of"),
        ("{name: x, key: source_ip, limit: 5}", "p.yaml:3: a rate limit needs `per`"),
        ("{name: x, key: source_ip, limit: 5, per: minute, paths: [/]}", "unknown field 'paths'"),
        ("{name: open, key: source_ip, limit: 5, per: minute}", "duplicate rule name 'open'"),
        ("{name: no_matching_rule, key: source_ip, limit: 5, per: minute}", "reserved"),
    ],
)
def test_bad_limits_are_named_with_file_and_line(entry: str, message: str) -> None:
    text = f"rules: [{{name: open, action: allow}}]\nrate_limits:\n  - {entry}\n"
    found = problems(text)
    assert any(message in p for p in found), found


def test_limit_names_are_unique_with_rule_names_across_files() -> None:
    a = ("a.yaml", "rules: [{name: shared, action: allow}]\n", ".")
    b = ("b.yaml", "rate_limits: [{name: shared, key: source_ip, limit: 1, per: hour}]\n", ".")
    with pytest.raises(PolicyError) as caught:
        build_policy_set([a, b])
    assert "is also used at" in str(caught.value.problems[0])


def test_the_json_schema_knows_rate_limits() -> None:
    import jsonschema
    import yaml

    from authz.authoring.json_schema import policy_schema

    validator = jsonschema.Draft202012Validator(policy_schema())
    assert validator.is_valid(yaml.safe_load(POLICY))
    for bad in (
        "{name: x, key: ip, limit: 1, per: minute}",
        "{name: x, key: source_ip, limit: 0, per: minute}",
        "{name: x, key: source_ip, limit: 1, per: day}",
        "{name: x, key: source_ip, limit: 1}",
        "{name: no_matching_rule, key: source_ip, limit: 1, per: hour}",
        "{name: x, key: source_ip, limit: 1, per: hour, paths: [/]}",
    ):
        document = yaml.safe_load(f"rate_limits:\n  - {bad}\n")
        assert not validator.is_valid(document), bad


def lint_codes(text: str) -> list[tuple[str, str]]:
    from authz.authoring.lint import lint

    return [(f.code, f.subject) for f in lint(policy(text)) if "limit" in f.code]  # type: ignore[arg-type]


def test_lint_warns_about_a_key_that_can_be_absent() -> None:
    base = "rules: [{name: open, action: allow, from: [{authenticated: true}]}]\nrate_limits:\n"
    absent = base + "  - {name: l, key: request_principal, limit: 1, per: hour}\n"
    assert lint_codes(absent) == [("limit-key-absent", "l")]
    header = base + "  - {name: l, key: 'header:x-client', limit: 1, per: hour}\n"
    assert lint_codes(header) == [("limit-key-absent", "l")]
    guarded = base + (
        "  - {name: l, key: 'header:x-client', limit: 1, per: hour,\n"
        "     when: [{header: x-client, present: true}]}\n"
    )
    assert lint_codes(guarded) == []
    issuers = base + (
        "  - {name: l, key: request_principal, limit: 1, per: hour,\n"
        "     from: [{issuers: [https://id]}]}\n"
    )
    assert lint_codes(issuers) == []
    assert lint_codes(base + "  - {name: l, key: source_ip, limit: 1, per: hour}\n") == []


def test_lint_finds_a_limit_no_allow_rule_can_reach() -> None:
    text = """\
rules:
  - {name: api, action: allow, to: [{paths: ["/api/{**}"], methods: [GET]}]}
  - {name: admin, action: deny, to: [{paths: ["/admin/{**}"]}]}
rate_limits:
  - {name: admin-limit, key: source_ip, limit: 1, per: hour, to: [{paths: ["/admin/{**}"]}]}
  - {name: post-limit, key: source_ip, limit: 1, per: hour, to: [{methods: [POST]}]}
  - {name: api-limit, key: source_ip, limit: 1, per: hour, to: [{paths: ["/api/orders"]}]}
  - {name: any-limit, key: source_ip, limit: 1, per: hour}
"""
    assert lint_codes(text) == [
        ("unreachable-limit", "admin-limit"),
        ("unreachable-limit", "post-limit"),
    ]


def test_policy_tests_can_expect_a_429_after_n_requests() -> None:
    from authz.authoring.cases import parse_cases, run_cases

    cases_text = """\
defaults: {host: shop, method: GET, path: /api/cart, headers: {x-client: c1}}
cases:
  - {name: third passes, repeat: 3, request: {}, expect: {decision: allow, reason: open}}
  - name: fourth is over
    repeat: 4
    request: {}
    expect: {decision: deny, status: 429, reason: per-client}
  - {name: each case counts afresh, request: {}, expect: {decision: allow}}
"""
    cases, problems = parse_cases("t_test.yaml", cases_text)
    assert problems == []
    results = run_cases(policy(), cases)  # type: ignore[arg-type]
    assert [r.failures for r in results] == [(), (), ()]
    _, bad = parse_cases("t_test.yaml", cases_text.replace("repeat: 3", "repeat: 0"))
    assert "t_test.yaml:3: repeat must be a number" in str(bad[0])


def test_explain_shows_which_limits_matched_and_their_state() -> None:
    from authz.authoring.scenario import Scenario, explain_scenario
    from authz.commands.explain import render

    explanation = explain_scenario(
        policy(),
        Scenario("GET", "/api/x", "shop", headers={"x-client": "c1"}),  # type: ignore[arg-type]
    )
    text = render(explanation)
    assert "rate limits:" in text
    assert "per-client  key header:x-client: present" in text and "1 of 3 per minute" in text
    assert "watch-ips" in text and "not counted (no source_ip)" in text
    denied = render(explain_scenario(policy(), Scenario("GET", "/admin", "shop")))  # type: ignore[arg-type]
    assert "not counted (the rules deny)" in denied


def test_requests_answered_from_the_decision_cache_are_counted_too() -> None:
    e = engine()
    verdicts = [e.check(request("/api/cart")) for _ in range(5)]
    assert e.decision_cache is not None and e.decision_cache.hits >= 3
    assert [v.decision.status for v in verdicts] == [200, 200, 200, 429, 429]
    # the cached allow is untouched: another client still gets it
    assert e.check(request("/api/cart", client="c2")).decision.allowed


def test_the_http_door_sends_the_429_headers() -> None:
    from authz.wire.http import to_answer

    e = engine()
    for _ in range(3):
        e.check(request("/api/cart"))
    answer = to_answer(e.check(request("/api/cart")))
    headers = dict(answer.headers)
    assert answer.status == 429
    assert headers["retry-after"] and headers["ratelimit-policy"] == '"per-client";q=3;w=60'


def test_replay_judges_a_429_by_the_rules_that_allowed_it() -> None:
    import json

    from authz.audit.replay import ALLOW_TO_DENY, replay
    from authz.observe.decision_log import decision_record

    e = engine()
    records = []
    for _ in range(5):
        r = request("/api/cart")
        records.append(json.loads(json.dumps(decision_record(1_800_000_000.0, r, e.check(r), 0))))
    assert [rec["status"] for rec in records] == [200, 200, 200, 429, 429]
    same = replay(policy(), records)  # type: ignore[arg-type]
    assert same.groups == {} and same.unchanged == 5
    closed = POLICY.replace('to: [{paths: ["/{**}"]}]', 'to: [{paths: ["/public"]}]')
    flipped = replay(policy(closed), records)  # type: ignore[arg-type]
    assert flipped.count(ALLOW_TO_DENY) == 5


def test_the_decision_cache_key_names_what_the_limits_read() -> None:
    host_policy = policy().for_host("shop")  # type: ignore[attr-defined]
    plan = host_policy.key_plan
    assert "x-client" in plan.headers and plan.source_ip and plan.cacheable
