"""`authz test --coverage`: what the cases exercise, counted by the compiled rules themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.authoring.cases import find_test_files, load_cases
from authz.authoring.coverage import measure
from authz.cli import main
from authz.policy import load_policy_set
from tests.unit.authoring.conftest import write

REPO = Path(__file__).resolve().parents[3]

POLICY = """\
hosts: [api.example.com]
authentication:
  jwt:
    - {issuer: https://id.example, audiences: [api], jwks_file: keys.json}
roles:
  reader:
    - {methods: [GET], paths: ["/items/{*}"]}
    - {methods: [HEAD], paths: ["/items/{*}"]}
rules:
  - name: read
    action: allow
    to: [{role: reader}]
  - name: staff-writes
    action: allow
    to: [{methods: [POST], paths: [/items]}]
    when:
      - {claim: scope, contains: write}
      - {header: x-tenant, equals: acme}
  - name: never-tested
    action: deny
    to: [{paths: [/admin]}]
"""

CASES = """\
defaults: {host: api.example.com}
cases:
  - name: read an item
    request: {method: GET, path: /items/1}
    expect: {decision: allow, reason: read}
  - name: write without the tenant header
    request:
      method: POST
      path: /items
      claims: {iss: https://id.example, aud: api, sub: bob, scope: write}
    expect: {decision: deny}
  - name: write without the scope
    request:
      method: POST
      path: /items
      claims: {iss: https://id.example, aud: api, sub: bob, scope: read}
      headers: {x-tenant: acme}
    expect: {decision: deny}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "p"
    write(d, "api.yaml", POLICY)
    write(d, "keys.json", (REPO / "policies" / "demo-jwks.json").read_text())
    write(d, "api_test.yaml", CASES)
    return d


def counts(directory: Path) -> dict[tuple[str, int], tuple[int, int]]:
    coverage = measure(load_policy_set(str(directory)), load_cases(find_test_files(str(directory))))
    return {(i.kind, i.line): (i.matched, i.evaluated) for i in coverage.items}


def test_each_rule_role_entry_and_condition_is_counted(policy_dir: Path) -> None:
    assert counts(policy_dir) == {
        ("role entry", 7): (1, 1),  # GET /items/1 went through reader entry 1
        ("role entry", 8): (0, 1),  # HEAD never tested
        ("rule", 10): (1, 1),
        ("rule", 13): (0, 2),  # evaluated by both POST cases, matched by neither
        ("condition", 17): (1, 2),  # the scope held once, failed once
        ("condition", 18): (0, 1),  # reached only where the scope held; the header was missing
        ("rule", 19): (0, 0),  # the index never handed it to the evaluator
    }


def test_cli_text_json_and_min_coverage(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", str(policy_dir), "--coverage"]) == 0
    out = capsys.readouterr().out
    assert f"{policy_dir}/api.yaml\n" in out
    assert "     8  role reader entry 2: methods [HEAD] paths [/items/{*}]  " in out
    assert "(matched 0, evaluated 1)  NOT COVERED" in out
    assert "coverage: 3/7 items matched (42.9%) by 3 cases" in out

    assert main(["test", str(policy_dir), "--coverage", "--json", "--min-coverage", "40"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["covered"], report["total"], report["percent"]) == (3, 7, 42.9)
    uncovered = [(i["kind"], i["line"]) for i in report["items"] if not i["covered"]]
    assert uncovered == [("role entry", 8), ("rule", 13), ("condition", 18), ("rule", 19)]

    assert main(["test", str(policy_dir), "--coverage", "--min-coverage", "50"]) == 1
    assert "coverage 42.9% is under --min-coverage 50%" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["200", "-1", "100.5", "abc"])
def test_min_coverage_is_a_percentage(
    policy_dir: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--min-coverage 200` could never pass; it was accepted (issue 25.11)."""
    with pytest.raises(SystemExit) as exit_:
        main(["test", str(policy_dir), "--min-coverage", value])
    assert exit_.value.code == 2
    assert "argument --min-coverage:" in capsys.readouterr().err


def test_the_example_set_leaves_only_the_order_update_entry_untested() -> None:
    examples = Path(__file__).resolve().parents[3] / "policies"
    coverage = measure(load_policy_set(str(examples)), load_cases(find_test_files(str(examples))))
    assert [i.text for i in coverage.items if not i.covered] == [
        "role orders-writer entry 2: methods [PUT, PATCH] paths [/api/orders/{*}]"
    ]
