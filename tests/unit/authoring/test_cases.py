"""Policy test files: parsing with file:line problems, and running cases via the real evaluator."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.authoring.cases import find_test_files, load_cases, parse_cases, run_cases
from authz.authoring.scenario import Scenario, explain_scenario
from authz.cli import main
from authz.errors import PolicyError
from authz.policy import load_policy_set

from .conftest import EXAMPLE_POLICIES, write


def test_the_shop_tests_pass() -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    cases = load_cases(find_test_files(str(EXAMPLE_POLICIES)))
    assert len(cases) >= 20
    failed = [(r.case.name, r.failures) for r in run_cases(policy_set, cases) if not r.passed]
    assert failed == []


def test_a_failure_names_what_was_expected_and_what_came() -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    cases, problems = parse_cases(
        "t_test.yaml",
        """
defaults: {host: localhost}
cases:
  - name: wrong
    request: {method: GET, path: /healthz}
    expect: {decision: deny, status: 403, reason: nope}
""",
    )
    assert problems == []
    [result] = run_cases(policy_set, cases)
    assert result.failures == ("expected deny 403 nope, got allow 200 health-checks",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cases: []\n", "t_test.yaml:1: `cases` must be a non-empty list"),
        (
            (
                "cases:\n  - name: a\n    request: {path: /x, host: h}\n"
                "    expect: {decision: allow}\n"
            ),
            "t_test.yaml:2: missing `request.method`",
        ),
        (
            (
                "cases:\n  - name: a\n    request: {method: GET, path: /x, host: h, colour: red}\n"
                "    expect: {decision: allow}\n"
            ),
            "t_test.yaml:3: unknown field 'colour' in request",
        ),
        (
            (
                "cases:\n  - name: a\n    request: {methdo: GET, path: /x, host: h}\n"
                "    expect: {decision: allow}\n"
            ),
            "t_test.yaml:3: unknown field 'methdo' in request; did you mean 'method'?",
        ),
        (
            (
                "cases:\n  - name: a\n    request: {method: GET, path: /x, host: h}\n"
                "    expect: {decision: yes}\n"
            ),
            "t_test.yaml:4: expect.decision must be allow or deny",
        ),
        (
            (
                "cases:\n  - name: a\n"
                "    request: {method: GET, path: /x, host: h, claims: {sub: s}}\n"
                "    expect: {decision: allow}\n"
            ),
            "t_test.yaml:3: claims stand for a verified JWT: they need an `iss` string",
        ),
        (
            "cases:\n"
            "  - name: a\n    request: {method: GET, path: /x, host: h}\n"
            "    expect: {decision: allow}\n"
            "  - name: a\n    request: {method: GET, path: /x, host: h}\n"
            "    expect: {decision: allow}\n",
            "t_test.yaml:5: duplicate case name 'a' (first on line 2)",
        ),
        ("cases:\n  - name: [unclosed\n", "t_test.yaml:"),
    ],
)
def test_problems_have_file_and_line(text: str, expected: str) -> None:
    cases, problems = parse_cases("t_test.yaml", text)
    assert cases == []
    assert any(str(p).startswith(expected) for p in problems), problems


def test_load_cases_collects_problems_of_every_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a_test.yaml", "cases: []\n")
    b = write(tmp_path, "b_test.yaml", "nothing: here\n")
    assert find_test_files(str(tmp_path)) == [str(a), str(b)]
    with pytest.raises(PolicyError) as caught:
        load_cases([str(a), str(b)])
    assert {Path(p.file).name for p in caught.value.problems} == {"a_test.yaml", "b_test.yaml"}


def test_a_test_file_that_cannot_be_read_is_one_plain_line(tmp_path: Path) -> None:
    """A missing file says so without Python's `[Errno 2] ... 'path'`; bytes that are not
    UTF-8 are named by line, as in a policy file (issue 25: a new user's mistakes)."""
    bad = tmp_path / "bad_test.yaml"
    bad.write_bytes(b"cases:\n  - name: caf\xe9\n")
    with pytest.raises(PolicyError) as caught:
        load_cases([str(tmp_path / "missing_test.yaml"), str(bad)])
    assert [str(p).replace(f"{tmp_path}/", "") for p in caught.value.problems] == [
        "bad_test.yaml:2: not UTF-8 text (byte 20 is 0xe9)",
        "missing_test.yaml: cannot read: No such file or directory",
    ]


def test_explain_traces_every_rule_of_the_host() -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    explanation = explain_scenario(
        policy_set,
        Scenario(
            "GET",
            "/api/payments/p/refund",
            "shop.example.com",
            principal="spiffe://cluster.local/ns/shop/sa/orders",
        ),
    )
    assert not explanation.decision.allowed  # GET is not in payments-processor
    by_name = {r.name: r for r in explanation.rules}
    assert by_name["audit-payment-refunds"].effect == "audit"
    assert by_name["orders-takes-payments"].failed == "to: role"
    assert len(explanation.rules) == policy_set.rule_count


def test_explain_marks_the_deciding_rule_and_dry_runs() -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    explanation = explain_scenario(
        policy_set,
        Scenario(
            "GET", "/admin/x", "localhost", principal="spiffe://cluster.local/ns/shop/sa/frontend"
        ),
    )
    assert explanation.decision.reason == "no-debug-endpoints"
    deciding = [r.name for r in explanation.rules if r.decides]
    assert deciding == ["no-debug-endpoints"]
    by_name = {r.name: r for r in explanation.rules}
    assert by_name["ops-reads-admin"].failed == "from: namespaces"


def test_explain_unknown_issuer_and_bad_path() -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    refused = explain_scenario(
        policy_set,
        Scenario("GET", "/api/orders", "localhost", claims={"iss": "https://x", "sub": "s"}),
    )
    assert (refused.decision.status, refused.decision.reason) == (401, "jwt_unknown_issuer")
    bad = explain_scenario(policy_set, Scenario("GET", "/a%2Fb", "localhost"))
    assert (bad.decision.status, bad.decision.reason, bad.path) == (400, "invalid_path", None)


def test_explain_judges_claims_with_the_services_own_checks() -> None:
    # explain and test must never disagree with the service: claims the service would refuse
    # (expired, wrong audience, no subject) are refused here with the same 401 and reason.
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    good = {"iss": "https://id.shop.example", "aud": "shop-api", "sub": "alice", "scope": "cart"}
    cases = {
        "jwt_expired": {**good, "exp": 1_000},
        "jwt_bad_audience": {**good, "aud": "other"},
        "jwt_missing_claim": {k: v for k, v in good.items() if k != "sub"},
    }
    for reason, claims in cases.items():
        explanation = explain_scenario(
            policy_set, Scenario("POST", "/api/cart/items", "localhost", claims=claims), now=2e9
        )
        assert (explanation.decision.status, explanation.decision.reason) == (401, reason)
    allowed = explain_scenario(
        policy_set, Scenario("POST", "/api/cart/items", "localhost", claims=good), now=2e9
    )
    assert allowed.decision.allowed


@pytest.mark.parametrize(
    ("method", "host", "reason"),
    [
        ("get", "localhost", "invalid_method"),  # as the service refuses it, not upper-cased
        ("GET", "localhost..", "invalid_host"),
        ("GET", "\u212aiosk.example.com", "invalid_host"),
    ],
)
def test_explain_refuses_what_the_service_refuses(method: str, host: str, reason: str) -> None:
    policy_set = load_policy_set(str(EXAMPLE_POLICIES))
    refused = explain_scenario(policy_set, Scenario(method, "/", host))
    assert (refused.decision.allowed, refused.decision.status) == (False, 400)
    assert refused.decision.reason == reason


def test_authz_test_given_one_test_file_runs_it_against_its_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`authz test policies/shop_test.yaml` (a new user's way of running one file) read the test
    file as a policy file; a policy file given alone was read as a test file."""
    assert main(["test", str(EXAMPLE_POLICIES / "shop_test.yaml")]) == 0
    assert " passed, 0 failed (policy revision " in capsys.readouterr().out
    assert main(["test", str(EXAMPLE_POLICIES / "shop.yaml")]) == 1
    assert capsys.readouterr().err == (
        f"{EXAMPLE_POLICIES / 'shop.yaml'}: a policy file, not tests: add --tests PATH\n"
    )
