"""Forward-auth behind a real nginx running the shipped config (deploy/nginx/, issue 22 item 3).

A real `authz serve --http-mode forward-auth`, nginx with deploy/nginx/site.conf (only its
addresses changed) and the echo upstream: no identity header a client sends reaches the app, no
credential the service removes (API key header and cookie, a `forward: false` bearer token)
reaches it, a credential nothing can remove (a query-string key) is refused, and a deny reaches
the client with its status (429 with Retry-After, not nginx's 500), JSON body and decision id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.identity.apikeys import key_hash
from tests.support import https
from tests.support.http_mode import ServeProcess
from tests.support.nginx import Nginx, nginx_binary
from tests.support.tokens import SigningKey, claims, jwks_json, make_key
from tests.support.upstream import EchoUpstream, RecordedRequest

pytestmark = pytest.mark.e2e

ISSUER = "https://id.forward.example"
KEY = "acme-key-0123456789abcdef"
POLICY = f"""
authentication:
  jwt:
    - issuer: {ISSUER}
      audiences: [shop]
      jwks_file: jwks.json
      from: [{{header: authorization, prefix: "Bearer "}}, {{query: access_token}}]
      claims_to_headers: {{sub: x-user-id}}
  api_keys:
    - name: partners
      from: [{{header: x-api-key}}, {{cookie: apikey}}, {{query: api_key}}]
      keys_file: partners.keys.yaml
rules:
  - name: no-internal
    action: deny
    when: [{{header: ":path", prefix: /open/internal}}]
  - name: users
    action: allow
    from: [{{issuers: ["{ISSUER}"]}}]
    to: [{{paths: ["/user/{{**}}"]}}]
  - name: partners
    action: allow
    from: [{{api_keys: ["partners/*"]}}]
    to: [{{paths: ["/partner/{{**}}"]}}]
  - name: open
    action: allow
    to: [{{paths: ["/open/{{**}}"]}}]
rate_limits:
  - name: slow-lane
    to: [{{paths: ["/open/slow"]}}]
    key: source_ip
    limit: 1
    per: hour
"""
SPOOFED = (
    ("x-user-id", "admin"),
    ("X-Authz-Principal", "spiffe://cluster.local/ns/shop/sa/payments"),
    ("x-authz-request-principal", f"{ISSUER}/admin"),
    ("X-AUTHZ-API-KEY", "partners/admin"),
    ("x-authz-decision-id", "forged"),
)
IDENTITY = ("x-user-id", "x-authz-principal", "x-authz-request-principal", "x-authz-api-key")


@dataclass
class Setup:
    nginx: Nginx
    upstream: EchoUpstream
    key: SigningKey

    def get(self, path: str, headers: list[tuple[str, str]] | None = None) -> https.Response:
        self.upstream.clear()
        return https.request(
            self.nginx.url, path, headers=[("host", "shop.test"), *(headers or [])]
        )

    def seen(self) -> RecordedRequest:
        (request,) = self.upstream.requests
        return request

    def bearer(self) -> str:
        return "Bearer " + self.key.sign(claims(ISSUER, now=time.time(), audience="shop"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    nginx_binary()  # skip before starting anything when there is no nginx
    tmp = tmp_path_factory.mktemp("forward-auth")
    policies = tmp / "policies"
    policies.mkdir()
    key = make_key("ES256")
    (policies / "jwks.json").write_text(jwks_json(key))
    (policies / "shop.yaml").write_text(POLICY)
    (policies / "partners.keys.yaml").write_text(
        f"keys: [{{id: acme-1, sha256: {key_hash(KEY)}}}]\n"
    )
    forward = ("--no-grpc", "--http-mode", "forward-auth")
    with ServeProcess(policies, *forward) as service, EchoUpstream() as upstream:
        app = f"{upstream.host}:{upstream.port}"
        with Nginx(tmp / "nginx", authz=service.http_address(), upstream=app) as nginx:
            yield Setup(nginx, upstream, key)


def test_no_client_identity_header_reaches_the_app(setup: Setup) -> None:
    answer = setup.get("/open/x", list(SPOOFED))
    assert answer.status == 200, answer.text
    seen = setup.seen()
    for name in IDENTITY:
        assert seen.header_values(name) == [], name
    (decision_id,) = seen.header_values("x-authz-decision-id")
    assert decision_id != "forged"


def test_identity_headers_come_from_the_answer_and_the_token_is_removed(setup: Setup) -> None:
    # A client's own list of replaced headers is overridden by nginx's (else this allow, which
    # sets x-user-id, would be denied as header_not_replaced).
    claimed = ("x-authz-proxy-replaces", "x-authz-decision-id")
    answer = setup.get("/user/me", [*SPOOFED, claimed, ("authorization", setup.bearer())])
    assert answer.status == 200, answer.text
    seen = setup.seen()
    assert seen.header_values("x-user-id") == ["alice"]
    assert seen.header_values("x-authz-request-principal") == [f"{ISSUER}/alice"]
    assert seen.header_values("x-authz-principal") == []
    assert seen.header("authorization") is None  # forward: false (the default)


def test_api_key_header_and_cookie_never_reach_the_app(setup: Setup) -> None:
    by_header = setup.get("/partner/a", [("x-api-key", KEY), ("cookie", "theme=dark")])
    assert by_header.status == 200, by_header.text
    seen = setup.seen()
    assert seen.header("x-api-key") is None
    assert seen.header_values("x-authz-api-key") == ["partners/acme-1"]
    assert seen.header_values("cookie") == ["theme=dark"]  # other cookies are kept

    by_cookie = setup.get("/partner/a", [("cookie", f"theme=dark; apikey={KEY}; lang=en")])
    assert by_cookie.status == 200, by_cookie.text
    seen = setup.seen()
    assert seen.header_values("cookie") == ["theme=dark; lang=en"]
    assert seen.header_values("x-authz-api-key") == ["partners/acme-1"]

    only_key = setup.get("/partner/a", [("cookie", f"apikey={KEY}")])
    assert only_key.status == 200, only_key.text
    assert setup.seen().header("cookie") is None


def test_a_credential_nginx_cannot_remove_is_refused(setup: Setup) -> None:
    """A key in the query string would reach the app as sent: the allow is denied."""
    for path in (f"/partner/a?api_key={KEY}", f"/open/x?api_key={KEY}"):
        answer = setup.get(path)
        assert answer.status == 403, (path, answer.text)
        assert setup.upstream.requests == []


def test_a_path_condition_reads_the_target_normalized_too(setup: Setup) -> None:
    """nginx passes `$request_uri` as sent (`X-Original-URI`), and the app receives it so;
    Envoy's doors see `:path` normalized. A deny on `:path` holds under both readings."""
    assert setup.get("/open/internal").status == 403
    for path in ("/open/%69nternal", "//open/internal", "/open/./internal", "/open/x/../internal"):
        answer = setup.get(path)
        assert answer.status == 403, (path, answer.text)
        assert setup.upstream.requests == []
    assert setup.get("/open/%69nternals-not").status == 403  # a prefix, as in Envoy
    assert setup.get("/open/x").status == 200


def test_a_token_in_two_places_is_refused(setup: Setup) -> None:
    """One copy would be removed and the other would reach the app: refused, as at every
    door (401 token_in_two_places)."""
    bearer = setup.bearer()
    token = bearer.removeprefix("Bearer ")
    assert setup.get("/user/me", [("authorization", bearer)]).status == 200
    answer = setup.get(f"/user/me?access_token={token}", [("authorization", bearer)])
    assert answer.status == 401, answer.text
    assert answer.json()["error"] == "unauthorized"
    assert setup.upstream.requests == []


def test_unchanged_headers_pass_as_sent(setup: Setup) -> None:
    """A replaced header the verdict does not touch keeps the client's value (a bearer on a
    route that needs none, as with Envoy: the service removes a token only it accepted)."""
    answer = setup.get("/open/x", [("cookie", "a=1"), ("x-other", "kept")])
    assert answer.status == 200, answer.text
    seen = setup.seen()
    assert seen.header_values("cookie") == ["a=1"]
    assert seen.header_values("x-other") == ["kept"]


def test_a_deny_reaches_the_client_with_its_status_body_and_decision_id(setup: Setup) -> None:
    denied = setup.get("/admin")
    assert denied.status == 403
    body = denied.json()
    assert body["error"] == "forbidden" and body["decision_id"]
    assert denied.header("x-authz-decision-id") == body["decision_id"]
    assert denied.header("content-type") == "application/json"

    challenged = setup.get("/user/me", [("authorization", "Bearer not.a.token")])
    assert challenged.status == 401, challenged.text
    assert challenged.json()["error"] == "unauthorized"
    (challenge,) = [v for k, v in challenged.headers if k == "www-authenticate"]
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge

    bad = setup.get("/open/a%2Fb")  # 400 from the service, a 500 through plain auth_request
    assert bad.status == 400, bad.text
    assert bad.json()["decision_id"]
    assert setup.upstream.requests == []


def test_a_429_reaches_the_client_with_retry_after(setup: Setup) -> None:
    first = setup.get("/open/slow")
    assert first.status == 200, first.text
    limited = setup.get("/open/slow")
    assert limited.status == 429, limited.text
    assert int(limited.header("retry-after") or "0") > 0
    assert limited.header("ratelimit-policy")
    body = limited.json()
    assert body["error"] == "too_many_requests" and body["decision_id"]
    assert limited.header("x-authz-decision-id") == body["decision_id"]
    assert setup.upstream.requests == []


def test_the_service_down_is_a_deny(tmp_path: Path) -> None:
    nginx_binary()
    with EchoUpstream() as upstream:
        app = f"{upstream.host}:{upstream.port}"
        with Nginx(tmp_path / "nginx", authz="127.0.0.1:9", upstream=app) as nginx:
            answer = https.request(nginx.url, "/open/x")
            assert answer.status == 503, answer.text
            assert upstream.requests == []
