"""Identity edge cases through a real Envoy (mTLS listener, client certificates made here) and
the service as a process with a decision log (issue 10 items 3 and 5).

- A short-form principal pattern (`cluster.local/ns/shop/sa/frontend`) stands for the SPIFFE
  ID: a certificate whose URI SAN is that bare text, without the `spiffe://` scheme, is no
  SPIFFE ID and must not be allowed.
- A verified token whose `sub` Envoy could not put in a header is refused with 401
  `jwt_invalid_claims`, and the decision log says so (before: the log said allow and Envoy
  answered 503).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import https
from tests.support.certs import Pki
from tests.support.service import ServiceProcess
from tests.support.tokens import SigningKey, claims, jwks_json, make_key
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

ISSUER = "https://id.edge.example"
BARE = "cluster.local/ns/shop/sa/frontend"
POLICY = f"""\
authentication:
  jwt:
    - issuer: {ISSUER}
      jwks_file: jwks.json
      claims_to_headers: {{sub: x-user-id, name: x-user-name}}
rules:
  - name: frontend-short-form
    action: allow
    from: [{{principals: ["{BARE}"]}}]
    to: [{{paths: [/workload]}}]
  - name: users
    action: allow
    from: [{{issuers: ["{ISSUER}"]}}]
    to: [{{paths: [/user]}}]
"""


@pytest.fixture
def key() -> SigningKey:
    return make_key("ES256")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.log"


@pytest.fixture
def service(tmp_path: Path, key: SigningKey, log_path: Path) -> Iterator[ServiceProcess]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "jwks.json").write_text(jwks_json(key))
    (policies / "edge.yaml").write_text(POLICY)
    args = ("--decision-log", str(log_path), "--no-watch")
    with ServiceProcess(policies, extra_args=args) as running:
        yield running


def decisions(path: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30  # generous bound, not a timing check
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return [json.loads(line) for line in lines]


def get(url: str, pki: Pki, path: str, cert: object, headers: object = ()) -> https.Response:
    return https.request(url, path, ca=pki.ca, client_cert=cert, headers=headers)  # type: ignore[arg-type]


def test_short_form_principal_matches_only_a_spiffe_id(
    service: ServiceProcess, envoy_factory: EnvoyFactory, pki: Pki, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    bare = pki.authority.issue(pki.directory, "bare-uri", common_name="frontend", uri_sans=[BARE])
    assert get(envoy.url, pki, "/workload", pki.client).status == 200  # spiffe://cluster.local/...
    assert len(upstream.requests) == 1
    answer = get(envoy.url, pki, "/workload", bare)
    assert answer.status == 403, answer.text
    assert len(upstream.requests) == 1


def test_subject_envoy_cannot_send_is_401_in_the_log_too(
    service: ServiceProcess,
    envoy_factory: EnvoyFactory,
    pki: Pki,
    upstream: EchoUpstream,
    key: SigningKey,
    log_path: Path,
) -> None:
    envoy = envoy_factory(service.address, mtls=True)
    now = time.time()

    def bearer(**extra: Any) -> dict[str, str]:
        return {"authorization": "Bearer " + key.sign(claims(ISSUER, now=now, **extra))}

    good = get(envoy.url, pki, "/user", pki.client, bearer(name="Alice"))
    assert good.status == 200, good.text
    assert upstream.requests[-1].header("x-user-name") == "Alice"
    subjects = ["alice\r\nx-admin: true", "alice\x01", "alice\x7f", "alice "]
    for subject in subjects:
        answer = get(envoy.url, pki, "/user", pki.client, bearer(subject=subject))
        assert answer.status == 401, (subject, answer.status, answer.text)
        assert (answer.header("www-authenticate") or "").startswith('Bearer error="invalid_token"')
    # A claim that cannot be a header is not sent; the request itself is fine.
    dropped = get(envoy.url, pki, "/user", pki.client, bearer(name="Mallory\r\nx-admin: true"))
    assert dropped.status == 200, dropped.text
    seen = upstream.requests[-1]
    assert seen.header("x-user-name") is None and seen.header("x-admin") is None
    assert len(upstream.requests) == 2

    records = decisions(log_path, 2 + len(subjects))
    outcomes = [(r["decision"], r["reason"], r["status"]) for r in records]
    assert outcomes == [
        ("allow", "users", 200),
        *[("deny", "jwt_invalid_claims", 401)] * len(subjects),
        ("allow", "users", 200),
    ]
