"""The rule index: 10,000 rules compile and a check looks at only a few of them."""

from __future__ import annotations

from authz.errors import Problem
from authz.policy import compile_policy_set, evaluate
from authz.policy.language.schema import FileSpec, RuleSpec, ToSpec

from ..conftest import ANON, policy, req


def _big_set(n: int) -> FileSpec:
    rules = []
    for i in range(n):
        method = ("GET", "POST", "PUT", "DELETE")[i % 4]
        rules.append(
            RuleSpec(
                name=f"rule-{i}",
                file="big.yaml",
                line=i + 1,
                action="deny" if i % 10 == 0 else "allow",
                to=(ToSpec.of(i + 1, methods=(method,), paths=(f"/svc{i}/{{**}}",)),),
            )
        )
    rules.append(RuleSpec(name="catch-all-audit", file="big.yaml", line=n + 1, action="audit"))
    return FileSpec(file="big.yaml", rules=tuple(rules))


def test_ten_thousand_rules_use_the_index() -> None:
    p = compile_policy_set([_big_set(10_000)], "rev")
    assert p.rule_count == 10_001
    hp = p.for_host("any.host")
    assert hp is not None
    cands = hp.candidates("PUT", "/svc4242/x/y")
    assert [r.name for r in cands] == ["rule-4242", "catch-all-audit"]
    d = evaluate(hp, req("/svc4242/x/y", "PUT"), ANON)
    assert d.allowed and d.reason == "rule-4242"
    d = evaluate(hp, req("/svc4240/x", "GET"), ANON)
    assert not d.allowed and d.reason == "rule-4240"
    d = evaluate(hp, req("/svc4242/x", "GET"), ANON)  # wrong method
    assert d.reason == "no_matching_rule"
    assert len(hp.candidates("GET", "/nothing")) == 1


def test_unindexable_rules_are_always_candidates() -> None:
    p = policy(
        """
        roles:
          r: [{methods: [GET], paths: [/role/x]}]
        rules:
          - {name: exact, action: allow, to: [{methods: [GET], paths: [/a/b]}]}
          - {name: not-methods, action: allow, to: [{not_methods: [GET], paths: [/a/b]}]}
          - {name: template-first, action: allow, to: [{paths: ['/{*}/b']}]}
          - {name: istio-prefix, action: allow, to: [{paths: ['/a*']}]}
          - {name: istio-prefix-seg, action: allow, to: [{paths: ['/a/*']}]}
          - {name: suffix, action: allow, to: [{paths: ['*.js']}]}
          - {name: by-role, action: allow, to: [{role: r}]}
          - {name: from-only, action: allow, from: [{namespaces: [x]}]}
        """
    )
    hp = p.for_host("h")
    assert hp is not None

    def names(method: str, path: str) -> list[str]:
        return [r.name for r in hp.candidates(method, path)]

    assert names("GET", "/a/b") == [
        "exact",
        "not-methods",
        "template-first",
        "istio-prefix",
        "istio-prefix-seg",
        "suffix",
        "from-only",
    ]
    assert names("GET", "/ab") == ["template-first", "istio-prefix", "suffix", "from-only"]
    assert names("GET", "/role/x") == [
        "template-first",
        "istio-prefix",
        "suffix",
        "by-role",
        "from-only",
    ]
    assert names("POST", "/role/x") == ["template-first", "istio-prefix", "suffix", "from-only"]
    # the index never hides a rule that matches
    for method, path in [
        ("GET", "/a/b"),
        ("POST", "/a/b"),
        ("GET", "/x/b"),
        ("GET", "/apple"),
        ("GET", "/z.js"),
    ]:
        d = evaluate(hp, req(path, method), ANON)
        assert d.allowed, (method, path)


def test_index_is_superset_of_matches() -> None:
    """Every rule that matches is a candidate, over a grid of requests and patterns."""
    pats = ["/", "/a", "/a/", "/a/{*}", "/a/{**}", "/{**}", "/a*", "/a/*", "*b", "*", "/{*}"]
    rules = "\n".join(
        f"  - {{name: r{i}, action: audit, to: [{{methods: [GET], paths: ['{p}']}}]}}"
        for i, p in enumerate(pats)
    )
    p = policy("rules:\n" + rules + "\n")
    hp = p.for_host("h")
    assert hp is not None
    from authz.policy.decide.context import RequestContext

    for path in ["/", "/a", "/a/", "/a/b", "/a/b/c", "/ab", "/b", "/x/b"]:
        ctx = RequestContext(req(path), ANON, hp.authentication)
        matching = {r.name for r in hp.rules if r.matches(ctx)}
        candidates = {r.name for r in hp.candidates("GET", path)}
        assert matching <= candidates, path
        assert matching, path
        assert {s.rule for s in evaluate(hp, req(path), ANON).shadow} == matching


def _unused(_: Problem) -> None:
    return None


def test_candidate_and_host_memos_stay_bounded_and_right() -> None:
    """Both memos are keyed by what the client chooses (first segment, host name): bounded,
    and a memoised answer is the same as a fresh one."""
    p = compile_policy_set([_big_set(100)], "rev")
    hp = p.for_host("shop.example.com")
    assert hp is not None
    first = [r.name for r in hp.candidates("PUT", "/svc42/x")]
    assert "rule-42" in first
    for i in range(20_000):
        hp.candidates("GET", f"/junk{i}/x")
        p.for_host(f"h{i}.example.com")
    assert len(hp._candidates) <= 4096 and len(p._by_name) <= 4096
    assert [r.name for r in hp.candidates("PUT", "/svc42/x")] == first
    assert p.for_host("shop.example.com") is hp
