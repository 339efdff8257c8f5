"""Issue 23.8: a 429 keeps the evidence of the rules' verdict. Through the real process: the
decision log line of a 429 names the API key's principal, and its span says how the token was
judged, as the allowed request before it did."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.test_operations import ISSUER, Service, status_of, wait_for_lines
from tests.integration.test_tracing import check, checks_of
from tests.support.otlp import OtlpReceiver
from tests.support.tokens import claims, jwks_json, make_key

pytest.importorskip("opentelemetry.sdk", reason="needs the authz[otel] extra")

REPO = Path(__file__).resolve().parents[2]
HOST = "shop.example.com"  # the host test_tracing.check asks for
ACME_KEY = "acme-demo-key"  # examples/partner-api/partners.keys.yaml: partners/acme-1


def write_policies(directory: Path, jwks: Path) -> None:
    directory.mkdir()
    shutil.copy(REPO / "examples" / "partner-api" / "partners.keys.yaml", directory)
    (directory / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        hosts: [{HOST}]
        authentication:
          jwt:
            - {{issuer: {ISSUER}, audiences: [shop], jwks_file: {jwks}}}
          api_keys:
            - {{name: partners, from: [{{header: x-api-key}}], keys_file: partners.keys.yaml}}
        rules:
          - name: users
            action: allow
            from: [{{issuers: ["{ISSUER}"]}}]
            to: [{{paths: ["/api/{{**}}"]}}]
          - name: partners
            action: allow
            from: [{{api_keys: ["partners/*"]}}]
            to: [{{paths: ["/v1/{{**}}"]}}]
        rate_limits:
          - {{name: per-user, to: [{{paths: ["/api/{{**}}"]}}], key: request_principal,
              limit: 1, per: hour}}
          - {{name: per-key, to: [{{paths: ["/v1/{{**}}"]}}], key: api_key, limit: 1, per: hour}}
        """),
        encoding="utf-8",
    )


def test_a_429_keeps_the_api_key_principal_and_the_token_judgement(tmp_path: Path) -> None:
    key = make_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    write_policies(tmp_path / "policies", jwks)
    log = tmp_path / "decisions.log"
    token = key.sign(claims(ISSUER, now=time.time(), audience="shop", subject="alice"))
    with OtlpReceiver() as collector:
        service = Service.on_loopback(
            tmp_path / "policies",
            tmp_path / "stderr.log",
            "--decision-log",
            str(log),
            "--otlp-endpoint",
            collector.endpoint,
            "--trace-sample-ratio",
            "1",
            "--no-watch",
        ).start()
        try:
            bearer = {"authorization": f"Bearer {token}"}
            users = [status_of(check(service, "/api/orders", bearer)) for _ in range(2)]
            keyed = {"x-api-key": ACME_KEY}
            partners = [status_of(check(service, "/v1/catalog", keyed)) for _ in range(2)]
            assert (users, partners) == ([200, 429], [200, 429])
            spans = collector.wait_for(lambda spans: len(checks_of(spans)) >= 4)
        finally:
            assert service.stop() == 0
    records = wait_for_lines(log, 4)
    user_allowed, user_limited, key_allowed, key_limited = records
    assert (user_limited["status"], user_limited["reason"]) == (429, "per-user")
    assert (key_limited["status"], key_limited["reason"]) == (429, "per-key")
    for allowed, limited in ((user_allowed, user_limited), (key_allowed, key_limited)):
        for field in ("principal", "request_principal", "api_key_principal", "token", "claims"):
            assert limited.get(field) == allowed.get(field), field
    assert user_limited["request_principal"] == f"{ISSUER}/alice"
    assert user_limited["token"] == "verified"
    assert key_limited["api_key_principal"] == "partners/acme-1"
    by_id = {s.attributes["authz.decision_id"]: s for s in checks_of(spans)}
    limited_span = by_id[user_limited["decision_id"]]
    assert limited_span.attributes["authz.status"] == 429
    # The second check found the token in the verified-token cache; the 429 says so.
    assert limited_span.attributes["authz.token"] == "cached"
    assert by_id[user_allowed["decision_id"]].attributes["authz.token"] == "verified"
