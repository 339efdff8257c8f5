"""The decision log: record content, secrets never shown, a real writer thread and file."""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest

from authz.model import Decision, Evidence, Request, ShadowMatch, Verdict
from authz.observe.decision_log import (
    SECRET_HEADERS,
    DecisionLog,
    decision_record,
    rfc3339,
    secret_digest,
    token_headers,
)
from authz.policy.language.spec import JwtProvider, TokenLocation

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln"
COOKIE = "session=very-secret-cookie"


def request(**headers: str) -> Request:
    return Request(
        method="GET",
        path="/api/orders",
        host="shop.example.com",
        raw_path="/api/orders?access_token=" + TOKEN,
        query="access_token=" + TOKEN,
        headers={
            "authorization": f"Bearer {TOKEN}",
            "cookie": COOKIE,
            "x-api-key": "k-secret",
            "user-agent": "curl/8",
            "x-trace": "t-1",
            **headers,
        },
        source_ip="10.1.2.3",
        request_id="req-1",
    )


def verdict(allowed: bool = True) -> Verdict:
    return Verdict(
        decision=Decision(
            allowed=allowed,
            status=200 if allowed else 403,
            reason="frontend-reads" if allowed else "no_matching_rule",
            rule="frontend-reads" if allowed else None,
            shadow=(
                ShadowMatch("try-admin", "allow", dry_run=True),
                ShadowMatch("watch-orders", "audit", dry_run=False),
            ),
        ),
        decision_id="abc-1",
        policy_revision="rev42",
        principal="spiffe://cluster.local/ns/shop/sa/frontend",
        request_principal="https://id.example.com/alice",
    )


def test_record_has_every_field() -> None:
    record = decision_record(0.0, request(), verdict(), 0.0012345, log_headers=("user-agent",))
    assert record == {
        "time": "1970-01-01T00:00:00.000Z",
        "decision_id": "abc-1",
        "decision": "allow",
        "status": 200,
        "reason": "frontend-reads",
        "rule": "frontend-reads",
        "dry_run": [{"rule": "try-admin", "would": "allow"}],
        "audit": ["watch-orders"],
        "principal": "spiffe://cluster.local/ns/shop/sa/frontend",
        "request_principal": "https://id.example.com/alice",
        "method": "GET",
        "host": "shop.example.com",
        "path": "/api/orders",
        "source": "10.1.2.3",
        "request_id": "req-1",
        "policy_revision": "rev42",
        "duration_ms": 1.234,
        "headers": {"user-agent": "curl/8"},
        "v": 2,
        "raw_path": "/api/orders",  # cut at "?": the query may carry a token
        "port": None,
    }


def test_unreadable_request_logs_the_verdict_only() -> None:
    record = decision_record(1.5, None, verdict(False), 0.0)
    assert record["decision"] == "deny" and record["status"] == 403
    assert record["method"] is None and record["path"] is None and "headers" not in record
    assert record["time"] == "1970-01-01T00:00:01.500Z"


def test_secret_headers_are_never_logged_even_when_allow_listed() -> None:
    allow = ("authorization", "cookie", "x-api-key", "x-token", "x-trace")
    record = decision_record(
        0.0,
        request(**{"x-token": "tok-secret"}),
        verdict(),
        0.0,
        log_headers=allow,
        secret_headers=SECRET_HEADERS | {"x-token"},
    )
    assert record["headers"] == {"x-trace": "t-1"}
    text = json.dumps(record)
    for secret in (TOKEN, "very-secret-cookie", "k-secret", "tok-secret"):
        assert secret not in text


def test_token_headers_of_providers() -> None:
    provider = JwtProvider(
        issuer="https://id",
        locations=(
            TokenLocation(header="X-JWT", prefix=""),
            TokenLocation(query="access_token"),
            TokenLocation(cookie="session"),
        ),
    )
    assert token_headers([provider, JwtProvider(issuer="https://other")]) == {
        "x-jwt",
        "authorization",
    }


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(1714564800.25) == "2024-05-01T12:00:00.250Z"


def test_writer_thread_writes_json_lines_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.log"
    log = DecisionLog(
        str(path),
        log_headers=("X-Trace", "x-jwt", "authorization"),
        token_headers=lambda: frozenset({"x-jwt"}),
        clock=lambda: 0.0,
    )
    log.start()
    try:
        for _ in range(50):
            log(request(**{"x-jwt": "jwt-secret"}), verdict(), 0.001)
        log(None, verdict(False), 0.0)
    finally:
        log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 51 and log.written == 51 and log.dropped == 0
    records = [json.loads(line) for line in lines]
    assert records[0]["headers"] == {"x-trace": "t-1"}
    assert records[-1]["decision"] == "deny"
    text = path.read_text(encoding="utf-8")
    for secret in (TOKEN, "very-secret-cookie", "k-secret", "jwt-secret"):
        assert secret not in text


def test_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    for _ in range(2):
        log = DecisionLog(str(path))
        log.start()
        log(request(), verdict(), 0.0)
        log.close()
    assert len(path.read_text().splitlines()) == 2


class BlockedStream(io.StringIO):
    """A stream whose writes wait until released: a stuck disk or a full stdout pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(10), "never released"
        return super().write(text)


def test_a_blocked_writer_drops_and_counts_instead_of_blocking() -> None:
    stream = BlockedStream()
    log = DecisionLog("-", stream=stream, max_queue=10)
    log.start()
    try:
        log(request(), verdict(), 0.0)
        assert stream.entered.wait(10)  # the writer holds the first record, blocked
        for _ in range(100):  # would hang here if a full queue blocked the caller
            log(request(), verdict(), 0.0)
        assert log.dropped == 90  # 10 fit in the queue
    finally:
        stream.release.set()
        log.close()
    assert len(stream.getvalue().splitlines()) == 11
    assert log.written == 11


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_write_errors_are_counted_not_raised() -> None:
    log = DecisionLog("-", stream=BrokenStream())
    log.start()
    log(request(), verdict(), 0.0)
    log(request(), verdict(), 0.0)
    log.close()
    assert log.dropped == 2 and log.written == 0


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = DecisionLog("-")
    log.start()
    log(request(), verdict(), 0.0)
    log.close()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["decision_id"] == "abc-1"


def test_unopenable_path_raises_at_start(tmp_path: Path) -> None:
    log = DecisionLog(str(tmp_path / "missing-dir" / "d.log"))
    with pytest.raises(OSError):
        log.start()
    log.close()


def test_two_writers_on_one_file_never_interleave_mid_line(tmp_path: Path) -> None:
    """`--workers N`: several processes append to one file; every line stays whole."""
    path = tmp_path / "shared.log"
    logs = [DecisionLog(str(path), log_headers=("x-pad",)) for _ in range(2)]
    padded = request(**{"x-pad": "p" * 3000})  # big lines: batches far over a stdio buffer
    for log in logs:
        log.start()
    try:
        for _ in range(300):
            for log in logs:
                log(padded, verdict(), 0.0)
    finally:
        for log in logs:
            log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 600
    assert all(json.loads(line)["headers"]["x-pad"] == "p" * 3000 for line in lines)


def test_v2_records_what_the_decision_read_and_hashes_secrets() -> None:
    claims = {
        "iss": "https://id.example.com",
        "sub": "alice",
        "aud": "shop",
        "scope": "orders.read",
        "email": "alice@example.com",  # not read by any condition: not logged
        "realm_access": {"roles": ["admin"]},
    }
    evidence = Evidence(
        token="verified",
        claims=claims,
        read_claims=frozenset({"scope", "realm_access.roles"}),
        read_headers=frozenset({"x-tenant", "x-api-key", "x-absent"}),
    )
    record = decision_record(
        0.0, request(**{"x-tenant": "acme"}), replace(verdict(), evidence=evidence), 0.0
    )
    assert record["token"] == "verified" and "token_reason" not in record
    assert record["claims"] == {
        "iss": "https://id.example.com",
        "sub": "alice",
        "aud": "shop",
        "realm_access.roles": ["admin"],
        "scope": "orders.read",
    }
    assert record["headers"] == {"x-tenant": "acme", "x-api-key": secret_digest("k-secret")}
    assert "k-secret" not in json.dumps(record) and TOKEN not in json.dumps(record)


def test_v2_rejected_token_and_refused_request_source() -> None:
    rejected = replace(verdict(False), evidence=Evidence("rejected", "jwt_expired"))
    record = decision_record(0.0, request(), rejected, 0.0)
    assert (record["token"], record["token_reason"]) == ("rejected", "jwt_expired")
    assert "claims" not in record
    refused = replace(verdict(False), evidence=Evidence("unchecked", source_ip="10.0.0.9"))
    assert decision_record(0.0, None, refused, 0.0)["source"] == "10.0.0.9"


def test_v2_peer_certificate_expiry(tmp_path: Path) -> None:
    from tests.support.certs import CertAuthority

    ca = CertAuthority("test-ca")
    frontend = "spiffe://cluster.local/ns/shop/sa/frontend"
    pem = ca.issue(tmp_path, "leaf", common_name="f", uri_sans=[frontend]).cert.read_text()
    encoded = urllib.parse.quote(pem, safe="")
    req = replace(request(), peer_certificate=encoded)
    record = decision_record(0.0, req, verdict(), 0.0)
    from cryptography import x509

    want = x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp()
    assert record["cert_not_after"] == rfc3339(want)
    assert "cert_not_after" not in decision_record(0.0, request(), verdict(), 0.0)


def test_api_key_headers_are_secret_and_the_principal_and_context_are_logged() -> None:
    from authz.model import Decision, Request, Verdict
    from authz.observe.decision_log import SECRET_HEADERS, decision_record, token_headers
    from authz.policy.language.spec import ApiKeyProvider, TokenLocation

    provider = ApiKeyProvider("partners", (TokenLocation(header="X-Partner-Key"),), "/p.keys.yaml")
    secrets = SECRET_HEADERS | token_headers([provider])
    assert "x-partner-key" in secrets
    request = Request(
        "GET",
        "/p",
        "h",
        raw_path="/p",
        headers={"x-partner-key": "the-key"},
        context={"zone": "internal"},
    )
    verdict = Verdict(Decision(True, 200, "r", rule="r"), "id", api_key_principal="partners/a")
    record = decision_record(
        0.0, request, verdict, 0.001, log_headers=("x-partner-key",), secret_headers=secrets
    )
    assert "the-key" not in str(record)
    assert record["api_key_principal"] == "partners/a"
    assert record["context"] == {"zone": "internal"}
