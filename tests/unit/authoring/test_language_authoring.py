"""The authoring tools on the second batch of the language (issue 17): the example policies
and their cases, lint findings, explain (captures, the API key, which condition failed) and
policy test cases that give an API key, context extensions and a query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.authoring.cases import find_test_files, load_cases, parse_cases, run_cases
from authz.authoring.lint import lint
from authz.authoring.scenario import Scenario, explain_scenario
from authz.cli import main
from authz.commands.explain import render
from authz.identity.apikeys import key_hash
from authz.policy import load_policy_set

from .conftest import write

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = [
    REPO / "examples" / "partner-api",
    REPO / "examples" / "multi-tenant",
    REPO / "examples" / "opaque-tokens",
]


@pytest.mark.parametrize("directory", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_pass_their_cases_and_lint_clean(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # examples/opaque-tokens reads its client secret from the environment (lint checks it).
    monkeypatch.setenv("PAYMENTS_INTROSPECTION_SECRET", "not-a-real-secret")
    policy_set = load_policy_set(str(directory))
    results = run_cases(policy_set, load_cases(find_test_files(str(directory))))
    assert results and all(r.passed for r in results), [r.failures for r in results]
    sources = {f.file: Path(f.file).read_text() for f in policy_set.files}
    assert lint(policy_set, sources) == []


KEYS = f"keys:\n  - {{id: acme-1, sha256: {key_hash('acme')}, labels: {{tier: gold}}}}\n"
POLICY = """
hosts: [api.example.com]
authentication:
  api_keys: [{name: partners, from: [{header: x-api-key}], keys_file: partners.keys.yaml}]
rules:
  - name: tenants
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{paths: ["/t/{tenant}/{**}"]}]
    when: [{api_key_label: tier, equals_capture: tenant}]
  - name: label-without-key
    action: allow
    to: [{paths: [/x]}]
    when: [{api_key_label: tier, not_equals: bronze}]
  - name: never-a-method
    action: allow
    to: [{not_methods: ["*"], paths: [/y]}]
  - name: block-all-methods
    action: deny
    to: [{methods: ["*"], paths: [/z]}]
  - name: shadowed
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{methods: [GET], paths: [/z]}]
"""


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    write(tmp_path, "p.yaml", POLICY)
    write(tmp_path, "partners.keys.yaml", KEYS)
    return tmp_path


def test_lint(directory: Path) -> None:
    policy_set = load_policy_set(str(directory))
    found = {(f.subject, f.code) for f in lint(policy_set)}
    assert ("label-without-key", "api-key-label-without-key") in found
    assert ("tenants", "api-key-label-without-key") not in found
    assert ("never-a-method", "unreachable") in found
    assert ("shadowed", "shadowed-by-deny") in found  # methods: ["*"] covers GET
    messages = {f.subject: f.message for f in lint(policy_set)}
    assert "not_methods: ['*']" in messages["never-a-method"]


def test_lint_unreachable_api_keys_without_a_provider(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        """
        hosts: [a.example.com]
        authentication: {mtls: {trust_domains: [cluster.local]}}
        rules:
          - {name: keyed, action: allow, from: [{api_keys: ["partners/*"]}]}
        """,
    )
    found = {(f.subject, f.code) for f in lint(load_policy_set(str(tmp_path)))}
    assert ("keyed", "unreachable") in found


def test_explain_shows_captures_the_key_and_the_failed_condition(directory: Path) -> None:
    policy_set = load_policy_set(str(directory))
    scenario = Scenario("GET", "/t/gold/x", "api.example.com", api_key="partners/acme-1")
    explanation = explain_scenario(policy_set, scenario)
    assert explanation.decision.allowed and explanation.decision.reason == "tenants"
    assert explanation.api_key_principal == "partners/acme-1"
    (trace,) = [r for r in explanation.rules if r.name == "tenants"]
    assert trace.captures == {"tenant": "gold"}
    text = render(explanation)
    assert "api key: partners/acme-1" in text and "captures: tenant='gold'" in text

    other = explain_scenario(
        policy_set, Scenario("GET", "/t/silver/x", "api.example.com", api_key="partners/acme-1")
    )
    (trace,) = [r for r in other.rules if r.name == "tenants"]
    assert trace.failed == "when: api_key_label tier equals_capture 'tenant'"
    assert trace.captures == {"tenant": "silver"}


def test_explain_cli_takes_an_api_key_and_context(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", str(directory), "--host", "api.example.com", "--path", "/t/gold/a"]
    assert main([*argv, "--api-key", "partners/acme-1", "--context", "zone=a", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"]["reason"] == "tenants"
    assert main([*argv, "--api-key", "partners/nobody"]) == 0
    text = capsys.readouterr().out
    assert "api_key_invalid" in text and 'ApiKey realm="partners"' in text


def test_cases_give_an_api_key_context_and_query(directory: Path) -> None:
    cases, problems = parse_cases(
        "c_test.yaml",
        """
defaults: {host: api.example.com, method: GET}
cases:
  - name: key
    request: {path: /t/gold/, api_key: partners/acme-1, context: {a: b}, query: {q: ["1", "x y"]}}
    expect: {decision: allow, reason: tenants}
  - name: unknown key
    request: {path: /t/gold/, api_key: partners/nobody}
    expect: {decision: deny, status: 401, reason: api_key_invalid}
""",
    )
    assert problems == []
    assert cases[0].scenario.path == "/t/gold/?q=1&q=x+y"
    assert cases[0].scenario.context == {"a": "b"}
    results = run_cases(load_policy_set(str(directory)), cases)
    assert all(r.passed for r in results), [r.failures for r in results]


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        ("{path: /, api_key: acme-1}", "<provider>/<id>"),
        ("{path: /, context: {a: 1}}", "context 'a'"),
        ("{path: /, query: {q: 1}}", "query 'q'"),
    ],
)
def test_case_problems(request_: str, fragment: str) -> None:
    _, problems = parse_cases(
        "c_test.yaml",
        f"cases:\n  - {{name: n, request: {request_}, expect: {{decision: deny}}}}\n"
        "defaults: {host: h, method: GET}\n",
    )
    assert any(fragment in p.message for p in problems), problems
