"""Rate limits keyed by the API key's principal and by the route's context."""

from __future__ import annotations

from pathlib import Path

from authz.authoring.lint import lint
from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.apikeys import key_hash
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore, load_policy_set

KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"
POLICY = """
hosts: [api.example.com]
authentication:
  api_keys:
    - name: partners
      from: [{header: x-api-key}]
      keys_file: partners.keys.yaml
rules:
  - name: partners
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{paths: ["/p/{**}"]}]
  - name: open
    action: allow
    to: [{paths: ["/open/{**}"]}]
rate_limits:
  - name: per-partner
    from: [{api_keys: ["partners/*"]}]
    to: [{paths: ["/p/{**}"]}]
    key: api_key
    limit: 2
    per: minute
  - name: per-route-tenant
    to: [{paths: ["/open/{**}"]}]
    when: [{context: tenant, present: true}]
    key: context:tenant
    limit: 1
    per: minute
"""


def engine(tmp_path: Path) -> Engine:
    (tmp_path / "p.yaml").write_text(POLICY)
    keys = "".join(
        f"  - {{id: {i}, sha256: {key_hash(k)}}}\n" for i, k in (("a", KEY_A), ("b", KEY_B))
    )
    (tmp_path / "partners.keys.yaml").write_text("keys:\n" + keys)
    return Engine(
        PolicyStore(load_policy_set(str(tmp_path))), ServiceResolver(Settings(), KeyRegistry())
    )


def test_api_key_limits_count_per_key(tmp_path: Path) -> None:
    e = engine(tmp_path)

    def status(key: str) -> int:
        request = Request("GET", "/p/x", "api.example.com", headers={"x-api-key": key})
        return e.check(request).decision.status

    assert [status(KEY_A) for _ in range(3)] == [200, 200, 429]
    assert status(KEY_B) == 200


def test_context_limits_count_per_route_value(tmp_path: Path) -> None:
    e = engine(tmp_path)

    def status(tenant: str | None) -> int:
        context = {"tenant": tenant} if tenant else {}
        return e.check(
            Request("GET", "/open/x", "api.example.com", context=context)
        ).decision.status

    assert [status("acme"), status("acme"), status("other"), status(None)] == [200, 429, 200, 200]


def test_lint_is_quiet_when_the_key_is_always_there(tmp_path: Path) -> None:
    engine(tmp_path)
    findings = [f for f in lint(load_policy_set(str(tmp_path))) if "limit" in f.code]
    assert findings == []
