"""Opaque tokens checked at a real RFC 7662 endpoint (HTTPS on loopback, test CA) through the
engine, and certificate-bound tokens (RFC 8705) with real certificates: active, inactive, slow,
down, garbage, revoked between two requests, one request for many concurrent checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry, KeysPending, KeyWait
from authz.identity.introspection import Introspector
from authz.identity.sources import ServiceResolver
from authz.model import Request, Verdict
from authz.policy import PolicyStore, load_policy_set
from tests.support.certs import Pki, make_pki
from tests.support.introspection_server import IntrospectionServer
from tests.support.tokens import claims, jwks_json, make_key

HOST = "shop.example.com"
ISSUER = "https://id.example.com"


def policy(endpoint: str, *, ttl: float = 60, timeout: float = 1.0, bound: bool = False) -> str:
    return f"""
hosts: [{HOST}]
authentication:
  introspection:
    - name: corp
      endpoint: {endpoint}
      issuer: {ISSUER}
      client_id: authz
      client_secret_file: secret.txt
      timeout: {timeout}
      cache: {{max_ttl: {ttl}, inactive_ttl: 0.2}}
      claims_to_headers: {{sub: x-user-id}}
      certificate_bound: {str(bound).lower()}
rules:
  - name: cart
    action: allow
    from: [{{request_principals: ["{ISSUER}/*"]}}]
    to: [{{paths: ["/cart/{{**}}"]}}]
    when: [{{claim: scope, contains: cart}}]
"""


@dataclass
class Setup:
    engine: Engine
    server: IntrospectionServer
    introspector: Introspector
    pki: Pki

    def check(self, token: str | None, path: str = "/cart/a", **kw: str) -> Verdict:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.engine.check(Request("GET", path, HOST, headers=headers, **kw))


def _context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    return context


def build(tmp_path: Path, server: IntrospectionServer, pki: Pki, **kw: object) -> Setup:
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "secret.txt").write_text("s3cret\n")
    (tmp_path / "p" / "shop.yaml").write_text(policy(server.endpoint, **kw))  # type: ignore[arg-type]
    introspector = Introspector(ssl_context=_context(pki))
    resolver = ServiceResolver(Settings(), KeyRegistry(), introspection=introspector)
    engine = Engine(PolicyStore(load_policy_set(str(tmp_path / "p"))), resolver)
    return Setup(engine, server, introspector, pki)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def server(pki: Pki) -> Iterator[IntrospectionServer]:
    with IntrospectionServer(pki) as s:
        yield s


@pytest.fixture
def setup(tmp_path: Path, server: IntrospectionServer, pki: Pki) -> Iterator[Setup]:
    s = build(tmp_path, server, pki)
    yield s
    s.introspector.close()


def test_an_active_token_is_an_end_user_like_a_jwt(setup: Setup) -> None:
    setup.server.grant("opaque-1", sub="alice", scope="read cart")
    verdict = setup.check("opaque-1")
    assert verdict.decision.allowed and verdict.decision.reason == "cart"
    # No iss in the answer: the provider's issuer stands in.
    assert verdict.request_principal == f"{ISSUER}/alice"
    headers = dict(verdict.headers_to_set)
    assert headers["x-user-id"] == "alice"
    assert "authorization" in verdict.headers_to_remove  # forward: false
    assert verdict.evidence is not None and verdict.evidence.claims is not None
    assert verdict.evidence.claims["scope"] == "read cart"
    # The claims decide: a scope without cart does not match.
    setup.server.grant("opaque-2", sub="bob", scope="read")
    assert setup.check("opaque-2").decision.reason == "no_matching_rule"


def test_inactive_is_a_401_invalid_token(setup: Setup) -> None:
    verdict = setup.check("never-issued")
    assert verdict.decision.status == 401 and verdict.decision.reason == "token_inactive"
    assert verdict.decision.challenge is not None
    assert 'error="invalid_token"' in verdict.decision.challenge


def test_a_hit_makes_no_request_and_the_token_is_never_a_cache_key(setup: Setup) -> None:
    setup.server.grant("opaque-3", sub="carol", scope="cart")
    for _ in range(5):
        assert setup.check("opaque-3").decision.allowed
    assert setup.server.requests == 1 and setup.introspector.cache_hits == 4
    keys = [k for cache in setup.introspector._caches.values() for k in cache._cache]
    assert keys == [hashlib.sha256(b"opaque-3").hexdigest()]


def test_revoked_between_two_requests_is_refused_within_the_max_ttl(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    s = build(tmp_path, server, pki, ttl=0.5)
    server.grant("opaque-r", sub="dave", scope="cart")
    assert s.check("opaque-r").decision.allowed
    server.revoke("opaque-r")
    assert s.check("opaque-r").decision.allowed  # the documented revocation delay
    deadline = time.monotonic() + 5
    while s.check("opaque-r").decision.allowed:
        assert time.monotonic() < deadline, "still allowed long after max_ttl"
        time.sleep(0.05)
    assert s.check("opaque-r").decision.reason == "token_inactive"
    s.introspector.close()


@pytest.mark.parametrize(
    "fault",
    ["slow", "down", "garbage", "html", "status", "secret", "array", "huge", "redirect", "empty"],
)
def test_an_outage_never_allows_and_answers_503(
    tmp_path: Path, server: IntrospectionServer, pki: Pki, fault: str
) -> None:
    s = build(tmp_path, server, pki, timeout=0.3)
    server.grant("opaque-f", sub="erin", scope="cart")
    if fault == "slow":
        server.slow(1.0)
    elif fault == "down":
        server.stop()
    elif fault == "garbage":
        server.garbage(b'{"active": "yes", "sub": "erin", "scope": "cart"}')
    elif fault == "html":
        server.garbage(b"<html>maintenance</html>")
    elif fault == "status":
        server.fail(502)
    elif fault == "array":
        server.garbage(b'[{"active": true, "sub": "erin", "scope": "cart"}]')
    elif fault == "huge":
        server.garbage(
            b'{"active": true, "sub": "erin", "scope": "cart", "x": "' + b"a" * 70_000 + b'"}'
        )
    elif fault == "redirect":
        server.fail(302)
    elif fault == "empty":
        server.garbage(b"")
    else:
        (tmp_path / "p" / "secret.txt").write_text("wrong")
    verdict = s.check("opaque-f")
    assert not verdict.decision.allowed
    assert verdict.decision.status == 503
    assert verdict.decision.reason == "introspection_unavailable"
    assert "corp" in s.introspector.status()
    # Not a bad token: no challenge that would tell the client to get a new one.
    assert verdict.decision.challenge is None
    server.heal()
    s.introspector.close()


def test_many_concurrent_checks_of_one_new_token_make_one_request(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    s = build(tmp_path, server, pki, timeout=5.0)
    server.grant("opaque-c", sub="frank", scope="cart")
    server.slow(0.5)  # every check arrives while the one request is in flight
    with ThreadPoolExecutor(64) as pool:
        verdicts = list(pool.map(lambda _: s.check("opaque-c"), range(1000)))
    assert all(v.decision.allowed for v in verdicts)
    assert server.requests == 1
    s.introspector.close()


def test_the_event_loop_door_awaits_without_blocking(setup: Setup) -> None:
    setup.server.grant("opaque-d", sub="gina", scope="cart")
    setup.server.slow(0.3)
    request = Request("GET", "/cart/a", HOST, headers={"authorization": "Bearer opaque-d"})

    async def door() -> tuple[Verdict, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            setup.engine.check(request, wait=KeyWait.DEFER)
        except KeysPending as pending:
            await pending.refetch.wait_async()
        verdict = setup.engine.check(request, wait=KeyWait.NEVER)
        task.cancel()
        return verdict, ticks

    verdict, ticks = asyncio.run(door())
    assert verdict.decision.allowed
    # The loop kept running while the endpoint took 0.3 s (about 30 ticks; blocked, none): a
    # loaded machine runs fewer, so the bound only tells running from blocked.
    assert ticks >= 3


def test_other_providers_are_unaffected_by_an_outage(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    key = make_key("ES256")
    s = build(tmp_path, server, pki, timeout=0.3)
    jwt_file = tmp_path / "p" / "jwt.yaml"
    jwt_file.write_text(
        f"""
hosts: [{HOST}]
authentication:
  jwt: [{{issuer: https://jwt.example.com, jwks: {jwks_json(key)!r}}}]
rules:
  - name: jwt-cart
    action: allow
    from: [{{issuers: [https://jwt.example.com]}}]
    to: [{{paths: [/cart/j]}}]
"""
    )
    registry = KeyRegistry()
    policy_set = load_policy_set(str(tmp_path / "p"))
    registry.ensure(policy_set.jwt_providers)
    resolver = ServiceResolver(Settings(), registry, introspection=s.introspector)
    engine = Engine(PolicyStore(policy_set), resolver)
    server.stop()
    token = key.sign(claims("https://jwt.example.com", now=time.time()))
    jwt_verdict = engine.check(
        Request("GET", "/cart/j", HOST, headers={"authorization": f"Bearer {token}"})
    )
    assert jwt_verdict.decision.allowed
    opaque = engine.check(
        Request("GET", "/cart/j", HOST, headers={"authorization": "Bearer opaque-x"})
    )
    assert opaque.decision.status == 503
    registry.close()
    s.introspector.close()


def _pem(path: Path) -> str:
    return urllib.parse.quote(path.read_text(), safe="")


def _thumbprint(path: Path) -> str:
    der = x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def test_a_certificate_bound_opaque_token_needs_its_certificate(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    s = build(tmp_path, server, pki, bound=True)
    other = pki.client_for("spiffe://cluster.local/ns/shop/sa/other")
    server.grant(
        "opaque-b", sub="hana", scope="cart", cnf={"x5t#S256": _thumbprint(pki.client.cert)}
    )
    good = s.check("opaque-b", peer_certificate=_pem(pki.client.cert))
    assert good.decision.allowed
    stolen = s.check("opaque-b", peer_certificate=_pem(other.cert))
    assert stolen.decision.status == 401 and stolen.decision.reason == "token_not_bound"
    bare = s.check("opaque-b")
    assert bare.decision.reason == "token_not_bound"
    server.grant("opaque-nocnf", sub="hana", scope="cart")
    assert s.check("opaque-nocnf", peer_certificate=_pem(pki.client.cert)).decision.reason == (
        "token_not_bound"
    )
    s.introspector.close()


def test_a_certificate_bound_jwt_and_a_trusted_xfcc_hash(tmp_path: Path, pki: Pki) -> None:
    key = make_key("ES256")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "p.yaml").write_text(
        f"""
hosts: [{HOST}]
authentication:
  jwt: [{{issuer: {ISSUER}, jwks: {jwks_json(key)!r}, certificate_bound: true}}]
rules:
  - {{name: any-user, action: allow, from: [{{issuers: [{ISSUER}]}}]}}
"""
    )
    policy_set = load_policy_set(str(tmp_path / "j"))
    made: list[KeyRegistry] = []
    for trust_xfcc in (False, True):
        registry = KeyRegistry()
        made.append(registry)
        registry.ensure(policy_set.jwt_providers)
        settings = Settings(trust_xfcc=trust_xfcc)
        engine = Engine(PolicyStore(policy_set), ServiceResolver(settings, registry))
        token = key.sign(
            claims(ISSUER, now=time.time(), cnf={"x5t#S256": _thumbprint(pki.client.cert)})
        )
        auth = {"authorization": f"Bearer {token}"}
        ok = engine.check(
            Request("GET", "/", HOST, headers=auth, peer_certificate=_pem(pki.client.cert))
        )
        assert ok.decision.allowed
        other = pki.client_for("spiffe://cluster.local/ns/x/sa/y", stem=f"o{trust_xfcc}")
        bad = engine.check(
            Request("GET", "/", HOST, headers=auth, peer_certificate=_pem(other.cert))
        )
        assert bad.decision.reason == "token_not_bound"
        der = x509.load_pem_x509_certificate(pki.client.cert.read_bytes()).public_bytes(
            Encoding.DER
        )
        xfcc = (
            f"Hash={hashlib.sha256(der).hexdigest()};URI=spiffe://cluster.local/ns/shop/sa/frontend"
        )
        via = engine.check(
            Request("GET", "/", HOST, headers={**auth, "x-forwarded-client-cert": xfcc})
        )
        # XFCC is read only when the operator trusts it.
        assert via.decision.allowed is trust_xfcc
        if not trust_xfcc:
            assert via.decision.reason == "token_not_bound"
    for registry in made:
        registry.close()


def test_different_tokens_at_once_each_get_their_own_answer(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    s = build(tmp_path, server, pki, timeout=10.0)
    for i in range(20):
        server.grant(f"t{i}", sub=f"u{i}", scope="cart")
    found: dict[int, str] = {}

    def one(i: int) -> None:
        found[i] = s.check(f"t{i}").request_principal

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == {i: f"{ISSUER}/u{i}" for i in range(20)}
    assert server.requests == 20
    s.introspector.close()


def test_the_service_counts_lookups_and_names_a_failing_provider_when_ready(
    tmp_path: Path, server: IntrospectionServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json as _json
    import urllib.request

    from authz.app import build_app

    # The service's own client, as `authz serve` builds it: the test CA through SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    build(tmp_path, server, pki, timeout=0.3).introspector.close()  # writes the policy files
    app = build_app(Settings(policies=str(tmp_path / "p"), watch=False, admin="127.0.0.1:0"))
    try:
        admin = app.start_admin()
        assert admin is not None
        server.grant("opaque-m", sub="ida", scope="cart")
        request = Request("GET", "/cart/a", HOST, headers={"authorization": "Bearer opaque-m"})
        assert app.engine.check(request).decision.allowed
        assert app.engine.check(request).decision.allowed
        server.fail(500)
        broken = Request("GET", "/cart/a", HOST, headers={"authorization": "Bearer other"})
        assert app.engine.check(broken).decision.status == 503
        text = app.metrics.render().decode() if app.metrics is not None else ""
        assert 'authz_introspection_requests_total{outcome="active",provider="corp"} 1.0' in text
        assert 'authz_introspection_requests_total{outcome="error",provider="corp"} 1.0' in text
        assert 'authz_introspection_cache_hits_total{provider="corp"} 1.0' in text
        assert 'authz_introspection_request_seconds_count{provider="corp"} 2.0' in text
        with urllib.request.urlopen(f"http://127.0.0.1:{admin.port}/readyz", timeout=5) as r:
            body = _json.loads(r.read())
        # Ready (restarting would not bring the endpoint back), with the detail.
        assert body["ready"] is True and body["introspection"]["corp"] == "HTTP 500"
    finally:
        app.close()
        server.heal()


def test_the_event_loop_door_gets_an_answer_the_cache_does_not_keep(
    tmp_path: Path, server: IntrospectionServer, pki: Pki
) -> None:
    # An active answer whose exp is already past is never cached; the door that waited for it
    # (DEFER, then NEVER) still gets it: 401 jwt_expired, not a 503.
    s = build(tmp_path, server, pki)
    server.grant("opaque-old", sub="jo", scope="cart", exp=int(time.time()) - 3600)
    request = Request("GET", "/cart/a", HOST, headers={"authorization": "Bearer opaque-old"})

    async def door() -> Verdict:
        try:
            s.engine.check(request, wait=KeyWait.DEFER)
        except KeysPending as pending:
            await pending.refetch.wait_async()
        return s.engine.check(request, wait=KeyWait.NEVER)

    verdict = asyncio.run(door())
    assert verdict.decision.status == 401 and verdict.decision.reason == "jwt_expired"
    assert server.requests == 1
    s.introspector.close()


def test_a_flood_of_new_tokens_is_bounded_in_flight(
    tmp_path: Path, server: IntrospectionServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import authz.identity.introspection as introspection

    monkeypatch.setattr(introspection, "MAX_IN_FLIGHT", 4)
    s = build(tmp_path, server, pki, timeout=2.0)
    server.slow(1.0)
    request = Request("GET", "/cart/a", HOST, headers={"authorization": "Bearer flood-0"})
    pending = []
    for i in range(4):  # four lookups in flight, none waited for
        try:
            s.engine.check(
                replace(request, headers={"authorization": f"Bearer flood-{i}"}),
                wait=KeyWait.DEFER,
            )
        except KeysPending as waiting:
            pending.append(waiting)
    assert len(pending) == 4
    fifth = s.engine.check(replace(request, headers={"authorization": "Bearer flood-9"}))
    assert fifth.decision.status == 503 and fifth.decision.reason == "introspection_unavailable"
    server.heal()
    s.introspector.close()
