"""The export refuses what Envoy cannot check: token introspection and certificate-bound
tokens (under --hybrid their hosts stay with the service)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.export import export_envoy
from authz.policy import load_policy_set

INTROSPECTION = """
hosts: [opaque.example.com]
authentication:
  introspection:
    - {name: corp, endpoint: "https://id.example.com/i", issuer: i, client_id: a,
       client_secret_env: S}
rules:
  - {name: users, action: allow, from: [{issuers: [i]}]}
"""
BOUND = """
hosts: [bound.example.com]
authentication:
  jwt:
    - {issuer: "https://id.example.com", jwks_uri: "https://id.example.com/k",
       certificate_bound: true}
rules:
  - {name: bound-users, action: allow, from: [{issuers: ["https://id.example.com"]}]}
"""


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        (INTROSPECTION, "introspection corp"),
        (BOUND, "jwt https://id.example.com certificate_bound"),
    ],
)
def test_refused_and_kept_under_hybrid(tmp_path: Path, text: str, subject: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    policy_set = load_policy_set(str(tmp_path))
    found = [f for f in export_envoy(policy_set).findings if f.subject == subject]
    assert found and found[0].decides and not found[0].kept
    kept = [f for f in export_envoy(policy_set, hybrid=True).findings if f.subject == subject]
    assert kept and kept[0].kept
