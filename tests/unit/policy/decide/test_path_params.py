"""`;params` cannot carry a request past a deny rule (Tomcat/Spring strip them before routing)."""

from __future__ import annotations

import pytest

from authz.model import ANONYMOUS, Request
from authz.policy import build_policy_set, evaluate
from authz.request.paths import normalize_path

POLICY = """
rules:
  - name: no-admin
    action: deny
    to: [{paths: [/admin, "/admin/{**}"]}]
  - name: open
    action: allow
    to: [{paths: ["/{**}"]}]
  - name: orders
    action: allow
    to: [{paths: [/api/orders]}]
"""


def decide(raw: str) -> tuple[bool, str]:
    policy_set = build_policy_set([("p.yaml", POLICY, ".")])
    path, query = normalize_path(raw)
    request = Request(method="GET", path=path, host="h", raw_path=raw, query=query)
    decision = evaluate(policy_set.for_host("h"), request, ANONYMOUS)
    return decision.allowed, decision.reason


@pytest.mark.parametrize(
    "raw", ["/admin;x=1", "/admin;/users", "/admin;jsessionid=1/x", "/a/../admin;p"]
)
def test_params_do_not_escape_deny(raw: str) -> None:
    assert decide(raw) == (False, "no-admin")


def test_params_elsewhere_keep_their_meaning() -> None:
    assert decide("/api;v=2/orders") == (True, "open")
    assert decide("/admin") == (False, "no-admin")
    assert decide("/administrator;x") == (True, "open")
