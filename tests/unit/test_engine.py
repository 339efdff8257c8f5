"""The engine end to end without gRPC: real policies from disk, real keys, real tokens."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
import pytest

from authz.config import HeaderNames, Settings
from authz.engine import Engine, rejection
from authz.errors import InvalidPath, TokenRejected
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.policy import PolicyStore, load_policy_set

REPO = Path(__file__).resolve().parents[2]
DEMO_KEY = (REPO / "examples/demo-issuer/private-key.pem").read_text()
ISSUER = "https://id.shop.example"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"


def demo_token(**overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "shop-api",
        "scope": "cart orders.read",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode(claims, DEMO_KEY, algorithm="ES256", headers={"kid": "demo-2026"})


DEFAULT_HEADERS = HeaderNames()


def make_engine(
    policies: Path, headers: HeaderNames = DEFAULT_HEADERS
) -> tuple[Engine, KeyRegistry]:
    policy_set = load_policy_set(policies)
    keys = KeyRegistry()
    keys.ensure(policy_set.jwt_providers)
    assert keys.wait_ready(10)
    engine = Engine(PolicyStore(policy_set), ServiceResolver(Settings(), keys), headers)
    return engine, keys


@pytest.fixture
def shop() -> object:
    engine, keys = make_engine(REPO / "policies")
    yield engine
    keys.close()


def request(
    path: str,
    *,
    method: str = "GET",
    principal: str = "",
    host: str = "shop.example.com",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> Request:
    return Request(
        method=method,
        path=path,
        host=host,
        raw_path=path,
        query=query,
        headers=headers or {},
        peer_principal=principal,
    )


def test_workload_allowed_with_identity_headers(shop: Engine) -> None:
    verdict = shop.check(request("/api/orders/42", principal=FRONTEND))
    assert verdict.decision.allowed and verdict.decision.reason == "frontend-reads-orders"
    sent = dict(verdict.headers_to_set)
    assert sent["x-authz-principal"] == FRONTEND
    assert sent["x-authz-decision-id"] == verdict.decision_id
    # What we did not set is removed, so a client-sent copy never reaches the upstream.
    assert "x-authz-request-principal" in verdict.headers_to_remove
    assert "x-user-id" in verdict.headers_to_remove
    assert verdict.policy_revision


def test_decision_ids_are_unique(shop: Engine) -> None:
    ids = {shop.check(request("/api/orders", principal=FRONTEND)).decision_id for _ in range(1000)}
    assert len(ids) == 1000


def test_decision_ids_are_random_uuidv7_and_reveal_no_counter(shop: Engine) -> None:
    # A client sees its decision id in the deny body: consecutive ids must not tell it how many
    # checks the process answered in between (a shared prefix plus a counter did).
    before = time.time_ns() // 1_000_000
    ids = [shop.check(request("/api/orders", principal=FRONTEND)).decision_id for _ in range(200)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))  # canonical spelling
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(before <= u.int >> 80 <= after for u in parsed)  # RFC 9562 unix_ts_ms prefix
    random_parts = [u.int & ((1 << 62) - 1) for u in parsed]  # rand_b
    assert len(set(random_parts)) == len(random_parts)
    # No counter: the random parts are not ordered the way the checks were.
    assert random_parts != sorted(random_parts)
    # The suffixes do not share a per-process prefix either.
    assert len({i[-12:-8] for i in ids}) > 100


def test_jwt_user_allowed_with_claims_to_headers(shop: Engine) -> None:
    token = demo_token()
    verdict = shop.check(request("/api/cart/items", headers={"authorization": f"Bearer {token}"}))
    assert verdict.decision.allowed, verdict.decision
    sent = dict(verdict.headers_to_set)
    assert sent["x-authz-request-principal"] == f"{ISSUER}/alice"
    assert sent["x-user-id"] == "alice"
    assert "x-authz-principal" in verdict.headers_to_remove
    # forward defaults to false (as Envoy's jwt_authn and Istio): the token stays here.
    assert "authorization" in verdict.headers_to_remove
    # For traces: verified now, then from the cache.
    assert verdict.token_check is not None and not verdict.token_check.cached
    again = shop.check(request("/api/cart/items", headers={"authorization": f"Bearer {token}"}))
    assert again.token_check is not None and again.token_check.cached


def test_rejected_token_is_401_invalid_token(shop: Engine) -> None:
    token = demo_token(exp=int(time.time()) - 3600)
    verdict = shop.check(request("/api/cart/items", headers={"authorization": f"Bearer {token}"}))
    assert not verdict.decision.allowed
    assert verdict.decision.status == 401 and verdict.decision.reason == "jwt_expired"
    assert verdict.decision.challenge is not None
    assert verdict.decision.challenge.startswith('Bearer error="invalid_token"')
    assert verdict.headers_to_set == ()
    assert verdict.token_check is not None and not verdict.token_check.cached


def test_a_token_in_two_places_is_401_invalid_request() -> None:
    """RFC 6750 section 3.1: a request using more than one method for the token is an
    invalid_request, not an invalid_token."""
    error = TokenRejected("in two places", reason="token_in_two_places")
    decision = rejection(error)
    assert (decision.status, decision.reason) == (401, "token_in_two_places")
    assert decision.challenge == 'Bearer error="invalid_request", error_description="in two places"'


def test_missing_token_where_one_would_help_is_401(shop: Engine) -> None:
    verdict = shop.check(request("/api/cart/items"))
    assert (verdict.decision.status, verdict.decision.reason) == (401, "no_matching_rule")
    assert verdict.decision.challenge == "Bearer"


def test_deny_rule_beats_allow(shop: Engine) -> None:
    denied = shop.check(request("/admin/users", principal=FRONTEND))
    assert (denied.decision.status, denied.decision.reason) == (403, "no-debug-endpoints")


def test_host_no_file_covers_is_denied(tmp_path: Path) -> None:
    # Only the host-scoped file: platform.yaml (no hosts) would cover every host.
    for name in ("shop.yaml", "demo-jwks.json"):
        (tmp_path / name).write_text((REPO / "policies" / name).read_text())
    engine, keys = make_engine(tmp_path)
    try:
        unknown = engine.check(request("/api/orders", principal=FRONTEND, host="evil.example.org"))
    finally:
        keys.close()
    assert (unknown.decision.status, unknown.decision.reason) == (403, "no_policy_for_host")


def test_refused_request_is_400(shop: Engine) -> None:
    verdict = shop.refuse(InvalidPath("encoded slash"))
    assert (verdict.decision.allowed, verdict.decision.status) == (False, 400)
    assert verdict.decision.reason == "invalid_path"


def test_renamed_headers(tmp_path: Path) -> None:
    names = HeaderNames(principal="x-peer", request_principal="x-user", decision_id="x-did")
    engine, keys = make_engine(REPO / "policies", names)
    try:
        verdict = engine.check(request("/api/orders", principal=FRONTEND))
    finally:
        keys.close()
    assert {"x-peer", "x-did"} <= dict(verdict.headers_to_set).keys()
    assert "x-user" in verdict.headers_to_remove


@pytest.mark.parametrize(
    ("location", "where"),
    [
        ("{header: x-token}", "header"),
        ("{query: access_token}", "query"),
        ("{cookie: session}", "cookie"),
    ],
)
def test_forward_false_strips_the_token(tmp_path: Path, location: str, where: str) -> None:
    (tmp_path / "jwks.json").write_text((REPO / "policies/demo-jwks.json").read_text())
    (tmp_path / "p.yaml").write_text(
        f"""
authentication:
  jwt:
    - issuer: {ISSUER}
      audiences: [shop-api]
      jwks_file: jwks.json
      forward: false
      from: [{location}]
rules:
  - name: users
    action: allow
    from: [{{issuers: ["{ISSUER}"]}}]
"""
    )
    engine, keys = make_engine(tmp_path)
    token = demo_token()
    headers, query = {}, ""
    if where == "header":
        headers = {"x-token": token}
    elif where == "query":
        query = f"access_token={token}"
    else:
        headers = {"cookie": f"theme=dark; session={token}; lang=en"}
    try:
        verdict = engine.check(request("/x", headers=headers, query=query))
    finally:
        keys.close()
    assert verdict.decision.allowed, verdict.decision
    if where == "header":
        assert "x-token" in verdict.headers_to_remove
    elif where == "query":
        assert verdict.query_parameters_to_remove == ("access_token",)
    else:
        assert dict(verdict.headers_to_set)["cookie"] == "theme=dark; lang=en"
    assert token not in json.dumps(verdict.headers_to_set)


def test_claim_header_values_envoy_refuses_are_dropped(tmp_path: Path) -> None:
    # One check (identity.is_header_value) for both: an iss/sub that cannot be a header refuses
    # the token, another claim that cannot be one is not sent (its header is removed).
    (tmp_path / "demo-jwks.json").write_text((REPO / "policies/demo-jwks.json").read_text())
    (tmp_path / "p.yaml").write_text(
        "authentication:\n"
        "  jwt:\n"
        f"    - issuer: {ISSUER}\n"
        "      jwks_file: demo-jwks.json\n"
        "      claims_to_headers: {sub: x-user-id, name: x-user-name, team: x-team}\n"
        "rules: [{name: users, action: allow, from: [{issuers: ['" + ISSUER + "']}]}]\n"
    )
    engine, keys = make_engine(tmp_path)
    try:
        for bad in ("Mallory\x01", "Mallory\x7f", " Mallory", "Mallory\r\nx-admin: 1"):
            token = demo_token(name=bad, team="blue")
            verdict = engine.check(request("/", headers={"authorization": f"Bearer {token}"}))
            assert verdict.decision.allowed, verdict.decision
            sent = dict(verdict.headers_to_set)
            assert sent["x-user-id"] == "alice" and sent["x-team"] == "blue"
            assert "x-user-name" not in sent and "x-user-name" in verdict.headers_to_remove
        token = demo_token(sub="alice\x01")
        verdict = engine.check(request("/", headers={"authorization": f"Bearer {token}"}))
        assert (verdict.decision.status, verdict.decision.reason) == (401, "jwt_invalid_claims")
        assert verdict.headers_to_set == ()
    finally:
        keys.close()
