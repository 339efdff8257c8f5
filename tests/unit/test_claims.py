"""One claim reader: `when: claim`, `claims_to_headers`, `claim:` rate-limit keys and the
decision log find a namespaced claim (`https://example.com/tenant`) the same way."""

from __future__ import annotations

from authz.claims import MISSING, claim_value, nested_claim
from authz.limits.keys import parse_key
from authz.model import EndUser, Identity, Request
from authz.policy.decide.context import RequestContext
from authz.policy.language.spec import Authentication

CLAIMS = {
    "https://example.com/tenant": "acme",
    "https://example.com/roles": ["a", "b"],
    "realm_access": {"roles": ["admin"]},
    "https://example": {"com/tenant": "nested-loses"},
}


def test_a_namespaced_claim_is_found_under_its_full_name() -> None:
    assert claim_value(CLAIMS, "https://example.com/tenant") == "acme"
    assert nested_claim(CLAIMS, "https://example.com/tenant") == "acme"
    assert nested_claim(CLAIMS, "realm_access.roles") == ["admin"]
    assert claim_value(CLAIMS, "absent.claim") is MISSING
    assert nested_claim(CLAIMS, "absent.claim") is None


def test_a_rate_limit_key_reads_a_namespaced_claim() -> None:
    user = EndUser("https://id.example.com", "alice", CLAIMS)
    ctx = RequestContext(Request("GET", "/", "h"), Identity(user=user), Authentication())
    assert parse_key("claim:https://example.com/tenant").read(ctx) == "acme"


def test_claims_to_headers_sends_a_namespaced_claim() -> None:
    from authz.engine import _claim_text

    assert _claim_text(CLAIMS, "https://example.com/tenant") == "acme"
    assert _claim_text(CLAIMS, "https://example.com/roles") == "a,b"
