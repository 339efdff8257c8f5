"""The policy-author commands as a user runs them: `python -m authz ...` on real directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def authz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies", target)
    return target


def test_validate_ok_and_invalid(examples: Path) -> None:
    ok = authz("validate", str(examples))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 files, 9 rules, revision" in ok.stdout
    (examples / "broken.yaml").write_text("rules:\n  - name: x\n    action: alow\n")
    bad = authz("validate", str(examples))
    assert bad.returncode == 1
    assert f"{examples}/broken.yaml:3: unknown action 'alow'" in bad.stdout


def test_validate_a_single_file(examples: Path) -> None:
    result = authz("validate", str(examples / "platform.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{examples / 'platform.yaml'}: 1 file, ")


def test_validate_says_1_rule(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: [{name: a, action: allow}]\n")
    result = authz("validate", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}: 1 file, 1 rule, revision " in result.stdout


def test_validate_a_missing_directory_names_it_without_a_line(tmp_path: Path) -> None:
    result = authz("validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path / 'nope'}: policy directory does not exist\n"


def test_validate_rejects_a_dangling_policy_link(tmp_path: Path) -> None:
    """Issue 10.1: a directory with an allow-all file and `deny.yaml -> /nonexistent` used to
    validate as "1 file, 1 rules"."""
    (tmp_path / "allow.yaml").write_text("rules: [{name: allow-all, action: allow}]\n")
    (tmp_path / "deny.yaml").symlink_to("/nonexistent")
    result = authz("validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'deny.yaml'}: cannot read: dangling symlink to /nonexistent" in (
        result.stdout
    )


def test_validate_deep_nesting_is_file_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("rules: " + "[" * 100_000 + "\n")
    result = authz("validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'deep.yaml'}:1: YAML: " in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_a_missing_jwks_file_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "authentication:\n  jwt:\n    - issuer: https://id.example\n"
        "      jwks_file: keys.json\nrules: [{name: a, action: allow}]\n"
    )
    result = authz("validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'a.yaml'}:4: jwks_file {tmp_path / 'keys.json'}: cannot read" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [("dangling", "deny.yaml: cannot read: dangling symlink to /nonexistent"),
     ("deep", "deny.yaml:1: YAML: ")],
)  # fmt: skip
def test_serve_refuses_to_start_on_a_bad_set(tmp_path: Path, entry: str, expected: str) -> None:
    from tests.support.ports import free_port

    (tmp_path / "allow.yaml").write_text("rules: [{name: allow-all, action: allow}]\n")
    if entry == "dangling":
        (tmp_path / "deny.yaml").symlink_to("/nonexistent")
    else:
        (tmp_path / "deny.yaml").write_text("rules: " + "[" * 100_000 + "\n")
    result = authz(
        "serve", "--policies", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}", "--no-watch"
    )
    assert result.returncode == 1
    assert f"{tmp_path}/{expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_lint_examples_and_strict(examples: Path) -> None:
    result = authz("lint", str(examples))
    assert result.returncode == 0
    assert "platform.yaml:10: [ops-reads-admin] dry-run-rule:" in result.stdout
    assert "shop.yaml:59: [audit-payment-refunds] audit-rule:" in result.stdout
    assert authz("lint", str(examples), "--strict").returncode == 1
    quiet = authz(
        "lint", str(examples), "--strict", "--disable", "dry-run-rule", "--disable", "audit-rule"
    )
    assert quiet.returncode == 0, quiet.stdout
    (examples / "broken.yaml").write_text("rules: []\n")
    assert authz("lint", str(examples)).returncode == 1


def test_test_runs_the_shop_cases_and_reports_failures(examples: Path) -> None:
    ok = authz("test", str(examples))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert " passed, 0 failed" in ok.stdout
    (examples / "extra_test.yaml").write_text(
        textwrap.dedent("""\
        cases:
          - name: health is open
            request: {method: GET, path: /healthz, host: localhost}
            expect: {decision: deny}
        """)
    )
    failing = authz("test", str(examples))
    assert failing.returncode == 1
    assert (
        "extra_test.yaml:2: health is open: expected deny, got allow 200 health-checks"
        in failing.stdout
    )
    assert "1 failed" in failing.stdout


def test_test_reports_invalid_test_files_with_lines(examples: Path) -> None:
    (examples / "bad_test.yaml").write_text(
        "cases:\n  - name: x\n    request: {path: /a}\n    expect: {decision: maybe}\n"
    )
    result = authz("test", str(examples))
    assert result.returncode == 1
    assert "bad_test.yaml:2: missing `request.method`" in result.stdout
    assert "bad_test.yaml:4: expect.decision must be allow or deny" in result.stdout


def test_explain_text_and_json(examples: Path) -> None:
    text = authz(
        "explain", str(examples), "--method", "POST", "--path", "/api/cart/items",
        "--claims", '{"iss": "https://id.shop.example", "aud": "shop-api", "sub": "u1", "scope": "profile"}',  # noqa: E501
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("DENY 403 reason=no_matching_rule")
    assert (
        "customers-use-cart" in text.stdout
        and "no match: when: claim scope contains 'cart'" in text.stdout
    )
    data = json.loads(
        authz("explain", str(examples), "--path", "/admin/x", "--principal",
              "spiffe://cluster.local/ns/ops/sa/console", "--json").stdout
    )  # fmt: skip
    rules = {r["name"]: r for r in data["rules"]}
    assert rules["ops-reads-admin"]["effect"] == "would allow"
    assert rules["no-debug-endpoints"]["failed"] == "from: not_namespaces"
    assert data["decision"]["reason"] == "no_matching_rule"


def test_explain_rejects_bad_arguments(examples: Path) -> None:
    result = authz("explain", str(examples), "--path", "/x", "--claims", "not json")
    assert result.returncode == 2 and "--claims is not JSON" in result.stderr


def test_schema_prints_json() -> None:
    result = authz("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["$schema"].endswith("2020-12/schema")
