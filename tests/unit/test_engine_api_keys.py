"""API keys through the engine (no gRPC): the principal header, the key never upstream, the
401s and their challenges, and the JWT cookie and an API-key cookie stripped together."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import HeaderNames, Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.apikeys import key_hash
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore, load_policy_set

GOOD = "good-key-0123456789"
POLICY = """
hosts: [api.example.com]
authentication:
  api_keys:
    - name: partners
      from: [{header: x-api-key}, {query: api_key}, {cookie: key}]
      keys_file: partners.keys.yaml
rules:
  - name: partners
    action: allow
    from: [{api_keys: ["partners/*"]}]
    to: [{paths: ["/p/{**}"]}]
  - name: open
    action: allow
    to: [{paths: ["/open"]}]
"""


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "partners.keys.yaml").write_text(
        f"keys:\n  - {{id: acme-1, sha256: {key_hash(GOOD)}}}\n"
    )
    policy_set = load_policy_set(str(tmp_path))
    return Engine(
        PolicyStore(policy_set),
        ServiceResolver(Settings(), KeyRegistry()),
        HeaderNames(api_key="x-partner"),
    )


def request(path: str, headers: dict[str, str] | None = None, query: str = "") -> Request:
    return Request("GET", path, "api.example.com", query=query, headers=headers or {})


def test_a_known_key_allows_and_never_goes_upstream(engine: Engine) -> None:
    verdict = engine.check(request("/p/x", {"x-api-key": GOOD, "x-partner": "partners/root"}))
    assert verdict.decision.allowed
    assert dict(verdict.headers_to_set)["x-partner"] == "partners/acme-1"
    assert "x-api-key" in verdict.headers_to_remove
    assert verdict.api_key_principal == "partners/acme-1"


def test_the_key_header_is_removed_even_where_no_key_was_needed(engine: Engine) -> None:
    verdict = engine.check(request("/open", {"x-partner": "partners/root"}))
    assert verdict.decision.allowed
    assert {"x-api-key", "x-partner"} <= set(verdict.headers_to_remove)


def test_a_key_in_the_query_or_a_cookie_is_removed(engine: Engine) -> None:
    verdict = engine.check(request("/p/x", query=f"api_key={GOOD}&page=2"))
    assert verdict.decision.allowed and verdict.query_parameters_to_remove == ("api_key",)
    verdict = engine.check(request("/p/x", {"cookie": f"theme=dark; key={GOOD}"}))
    assert verdict.decision.allowed
    assert dict(verdict.headers_to_set)["cookie"] == "theme=dark"


@pytest.mark.parametrize(
    "headers", [{"x-api-key": "wrong"}, {"x-api-key": f"{GOOD},wrong"}, {"x-api-key": ""}]
)
def test_an_unknown_or_smuggled_key_is_401_whatever_the_rules(
    engine: Engine, headers: dict[str, str]
) -> None:
    verdict = engine.check(request("/open", headers))  # /open needs no key, all the same
    assert (verdict.decision.status, verdict.decision.reason) == (401, "api_key_invalid")
    assert verdict.decision.challenge == 'ApiKey realm="partners"'
    assert verdict.evidence is not None and verdict.evidence.token_reason == "api_key_invalid"


def test_no_key_where_one_was_needed_is_a_401_with_the_challenge(engine: Engine) -> None:
    verdict = engine.check(request("/p/x"))
    assert verdict.decision.status == 401
    assert verdict.decision.challenge == 'ApiKey realm="partners"'


CACHE_POLICY = """
hosts: [api.example.com]
authentication:
  api_keys: [{name: partners, from: [{header: x-api-key}], keys_file: partners.keys.yaml}]
rules:
  - {name: anyone-known, action: allow, from: [{authenticated: true}], to: [{paths: [/a]}]}
  - {name: internal, action: allow, to: [{paths: [/c]}], when: [{context: zone, equals: in}]}
  - {name: csv, action: allow, to: [{paths: [/q]}], when: [{query: f, equals: csv}]}
"""


@pytest.fixture
def cached(tmp_path: Path) -> Engine:
    (tmp_path / "p.yaml").write_text(CACHE_POLICY)
    (tmp_path / "partners.keys.yaml").write_text(
        f"keys:\n  - {{id: acme-1, sha256: {key_hash(GOOD)}}}\n"
    )
    store = PolicyStore(load_policy_set(str(tmp_path)))
    return Engine(store, ServiceResolver(Settings(), KeyRegistry()), decision_cache=True)


def test_the_decision_cache_keys_on_the_api_key_context_and_query(cached: Engine) -> None:
    from types import MappingProxyType

    def check(path: str, **kw: object) -> tuple[bool, str]:
        verdict = cached.check(Request("GET", path, "api.example.com", **kw))  # type: ignore[arg-type]
        return verdict.decision.allowed, verdict.api_key_principal

    for _ in range(2):  # the second round is answered from the cache
        assert check("/a", headers={"x-api-key": GOOD}) == (True, "partners/acme-1")
        assert check("/a") == (False, "")
        assert check("/c", context=MappingProxyType({"zone": "in"}))[0]
        assert not check("/c", context=MappingProxyType({"zone": "out"}))[0]
        assert check("/q", query="f=csv")[0]
        assert not check("/q", query="f=pdf")[0]
    assert cached.decision_cache is not None and cached.decision_cache.hits >= 6
