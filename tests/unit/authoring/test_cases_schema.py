"""Policy test files have their own JSON Schema, and it agrees with the real test-file parser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from authz.authoring import cases, cases_schema, json_schema

from .conftest import EXAMPLE_POLICIES, REPO

SCHEMA = cases_schema.cases_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
POLICY_VALIDATOR = jsonschema.Draft202012Validator(json_schema.policy_schema())

CASE = "- {name: c, request: {method: GET, path: /x, host: a}, expect: {decision: allow}}\n"

VALID = {
    "minimal": "cases:\n" + CASE,
    "defaults": (
        "defaults: {host: a, method: GET}\n"
        "cases:\n"
        "  - name: c\n"
        "    request: {path: /x, principal: 'spiffe://td/ns/a/sa/b', source_ip: 10.0.0.1,\n"
        "              port: 8080, headers: {x-a: b, x-n: 3},\n"
        "              claims: {iss: https://i, sub: s, scope: 'a b'}}\n"
        "    expect: {decision: deny, status: 403, reason: no_matching_rule}\n"
    ),
}
INVALID = {
    "no cases": "defaults: {host: a}\n",
    "empty cases": "cases: []\n",
    "unknown top-level field": "case:\n" + CASE,
    "unknown request field": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a, user: b}, "
        "expect: {decision: allow}}]\n"
    ),
    "unknown expect field": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a}, "
        "expect: {decision: allow, rule: r}}]\n"
    ),
    "bad decision": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a}, expect: {decision: ok}}]\n"
    ),
    "no expect": "cases: [{name: c, request: {method: GET, path: /x, host: a}}]\n",
    "no name": "cases: [{request: {method: GET, path: /x, host: a}, expect: {decision: allow}}]\n",
    "port out of range": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a, port: 70000}, "
        "expect: {decision: allow}}]\n"
    ),
    "claims without sub": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a, claims: {iss: i}}, "
        "expect: {decision: allow}}]\n"
    ),
    "status not a number": (
        "cases: [{name: c, request: {method: GET, path: /x, host: a}, "
        "expect: {decision: allow, status: ok}}]\n"
    ),
}


def _parser_ok(text: str) -> bool:
    _found, problems = cases.parse_cases("t_test.yaml", text)
    return not problems


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_fields_are_the_parsers_fields() -> None:
    case = SCHEMA["properties"]["cases"]["items"]
    assert set(case["properties"]["request"]["properties"]) == cases.REQUEST_FIELDS
    assert set(SCHEMA["properties"]["defaults"]["properties"]) == cases.REQUEST_FIELDS
    assert set(case["properties"]["expect"]["properties"]) == cases.EXPECT_FIELDS


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_documents_pass_both(text: str) -> None:
    assert _parser_ok(text)
    assert VALIDATOR.is_valid(yaml.safe_load(text))


@pytest.mark.parametrize("text", INVALID.values(), ids=INVALID.keys())
def test_invalid_documents_fail_both(text: str) -> None:
    assert not _parser_ok(text)
    assert not VALIDATOR.is_valid(yaml.safe_load(text))


@pytest.mark.parametrize("path", sorted(EXAMPLE_POLICIES.glob("*_test.yaml")), ids=lambda p: p.name)
def test_example_test_files_pass_their_schema_not_the_policy_one(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert VALIDATOR.is_valid(document)
    # The reason a test file needs its own schema: as a policy, `cases` is an unknown field.
    assert not POLICY_VALIDATOR.is_valid(document)


def test_the_committed_copy_equals_authz_schema_tests_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "authz", "schema", "--tests"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    committed = (REPO / "docs" / "policy-test.schema.json").read_text(encoding="utf-8")
    assert out == committed, (
        "docs/policy-test.schema.json is stale: run "
        "`authz schema --tests -o docs/policy-test.schema.json`"
    )
    assert json.loads(out) == SCHEMA


_MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


@pytest.mark.parametrize(
    "path",
    sorted([*EXAMPLE_POLICIES.glob("*.yaml"), *EXAMPLE_POLICIES.glob("*.yml")]),
    ids=lambda p: p.name,
)
def test_example_files_name_their_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    match = _MODELINE.search(text.split("\n", 1)[0])
    assert match, f"{path.name}: the first line should be a yaml-language-server modeline"
    expected = (
        "policy-test.schema.json"
        if path.name.endswith(cases.TEST_SUFFIXES)
        else ("policy.schema.json")
    )
    target = (path.parent / match.group(1)).resolve()
    assert target == REPO / "docs" / expected
    assert target.is_file()
