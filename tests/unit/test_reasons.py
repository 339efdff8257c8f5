"""One table of reason codes: everything the service can emit is in it, and nothing else may use
those names (a rule named like a code would be indistinguishable from it in logs and metrics)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import jsonschema
import pytest
import yaml

import authz
from authz.authoring import json_schema
from authz.errors import AuthzError
from authz.policy.decide.evaluate import NO_MATCHING_RULE, NO_POLICY_FOR_HOST
from authz.policy.language import schema as policy_schema
from authz.reasons import CODES, Reason
from tests.unit.policy.conftest import problems

PACKAGE = Path(authz.__file__).parent


def _literal_codes() -> dict[str, str]:
    """Every reason code written as a literal in the package: `reason="..."` keywords,
    `reason = "..."` class attributes, `{"reason": "..."}` and `_reject("...", ...)` calls (the
    PyJWT mapping) -> where it is written."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        if "_proto" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            values: list[ast.expr] = []
            if isinstance(node, ast.Call):
                values += [k.value for k in node.keywords if k.arg == "reason"]
                func = node.func
                if isinstance(func, ast.Name) and func.id == "_reject" and node.args:
                    values.append(node.args[0])
            elif isinstance(node, ast.Dict):  # {"reason": "internal_error", ...}
                values += [
                    v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and k.value == "reason"
                ]
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
            ):
                values.append(node.value)
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[value.value] = f"{path.relative_to(PACKAGE.parent)}:{value.lineno}"
    return found


def _error_classes() -> list[type[AuthzError]]:
    for module in pkgutil.walk_packages([str(PACKAGE)], "authz."):
        if "_proto" not in module.name and "__main__" not in module.name:
            importlib.import_module(module.name)
    seen: list[type[AuthzError]] = []
    todo: list[type[AuthzError]] = [AuthzError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_the_scan_finds_the_codes_it_must() -> None:
    # The scan itself must see the raise sites, or the next test proves nothing.
    codes = _literal_codes()
    for known in ("jwt_bad_signature", "jwt_unknown_kid", "xfcc_invalid", "internal_error"):
        assert known in codes


def test_every_literal_reason_code_is_in_the_table() -> None:
    unknown = {code: where for code, where in _literal_codes().items() if code not in CODES}
    assert not unknown, f"reason codes missing from authz.reasons.Reason: {unknown}"


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_carries_a_code_of_the_table(cls: type[AuthzError]) -> None:
    assert isinstance(cls.reason, Reason), cls
    # The status is the code's, never declared again on a class.
    assert cls is AuthzError or "status" not in vars(cls), cls


def test_the_decisions_without_a_rule_use_the_table() -> None:
    assert NO_MATCHING_RULE is Reason.NO_MATCHING_RULE
    assert NO_POLICY_FOR_HOST is Reason.NO_POLICY_FOR_HOST


def test_an_error_built_with_a_code_takes_its_status_and_refuses_unknown_codes() -> None:
    from authz.errors import TokenRejected

    error = TokenRejected("expired", reason="jwt_expired")
    assert error.reason is Reason.JWT_EXPIRED and error.status == 401
    with pytest.raises(ValueError):
        TokenRejected("x", reason="jwt_made_up")


def test_every_code_has_a_status_and_a_meaning() -> None:
    for reason in Reason:
        assert 400 <= reason.status <= 599, reason
        assert reason.meaning and "\n" not in reason.meaning, reason
        assert reason.value == reason.name.lower()


def test_the_reserved_names_are_the_table() -> None:
    assert CODES == policy_schema.RESERVED_NAMES
    rule_name = json_schema.policy_schema()["$defs"]["rule"]["properties"]["name"]
    assert set(rule_name["not"]["enum"]) == set(Reason)


@pytest.mark.parametrize("code", sorted(Reason))
def test_a_rule_named_like_a_code_is_a_validation_error(code: str) -> None:
    text = f"rules:\n  - name: {code}\n    action: allow\n"
    found = problems(text)
    assert any(p.line == 2 and "reserved" in p.message for p in found), found
    validator = jsonschema.Draft202012Validator(json_schema.policy_schema())
    assert not validator.is_valid(yaml.safe_load(text))
