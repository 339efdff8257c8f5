"""SPIFFE ID parsing (SPIFFE-ID.md sections 2.1-2.3) and the workload it gives."""

from __future__ import annotations

import pytest

from authz.identity import parse_spiffe_id, workload_for
from authz.model import Workload

VALID = [
    ("spiffe://cluster.local/ns/shop/sa/frontend", "cluster.local", "shop", "frontend"),
    ("spiffe://example.org", "example.org", None, None),
    ("spiffe://example.org/workload/a.b-c_d", "example.org", None, None),
    ("spiffe://td/ns/a/sa/b/extra", "td", None, None),  # not Istio's shape: no ns/sa
    ("spiffe://my_td-1.example/ns/N-1/sa/S.a", "my_td-1.example", "N-1", "S.a"),
    (
        "spiffe://td/ns/.../sa/x",
        "td",
        "...",
        "x",
    ),  # "..." is a legal segment, only . and .. are not
]

INVALID = [
    "",
    "spiffe://",
    "spiffe:///ns/a/sa/b",  # empty trust domain
    "SPIFFE://td/ns/a/sa/b",  # scheme must be lower case
    "spiffe:td/ns/a",
    "https://td/ns/a/sa/b",
    "spiffe://TD/ns/a/sa/b",  # trust domain must be lower case
    "spiffe://td:8080/ns/a/sa/b",  # port
    "spiffe://user@td/ns/a/sa/b",  # user info
    "spiffe://td/ns/a/sa/b/",  # trailing slash
    "spiffe://td//ns/a",  # empty segment
    "spiffe://td/ns/./sa/b",
    "spiffe://td/ns/../sa/b",
    "spiffe://td/ns/a/sa/b?x=1",  # query
    "spiffe://td/ns/a/sa/b#frag",  # fragment
    "spiffe://td/ns/a%2Fb/sa/c",  # percent-encoding
    "spiffe://td/ns/a b/sa/c",
    "spiffe://td/ns/ä/sa/c",
    "spiffe://" + "a" * 256,  # trust domain over 255
    "spiffe://td/" + "a" * 2048,  # over 2048 bytes
]


@pytest.mark.parametrize(("text", "td", "ns", "sa"), VALID)
def test_valid_ids(text: str, td: str, ns: str | None, sa: str | None) -> None:
    parsed = parse_spiffe_id(text)
    assert parsed is not None
    assert (parsed.trust_domain, parsed.namespace, parsed.service_account) == (td, ns, sa)
    assert parsed.id == text


@pytest.mark.parametrize("text", INVALID)
def test_invalid_ids(text: str) -> None:
    assert parse_spiffe_id(text) is None


def test_workload_without_trust_domain_restriction() -> None:
    assert workload_for("spiffe://cluster.local/ns/shop/sa/frontend", None) == Workload(
        "spiffe://cluster.local/ns/shop/sa/frontend", "cluster.local", "shop", "frontend"
    )
    # A non-SPIFFE principal (DNS SAN, subject) is a workload with only its principal.
    assert workload_for("frontend.shop.svc", None) == Workload("frontend.shop.svc")
    assert workload_for("", None) is None


def test_trust_domains_restrict() -> None:
    allowed = frozenset({"cluster.local"})
    assert workload_for("spiffe://cluster.local/ns/a/sa/b", allowed) is not None
    assert workload_for("spiffe://evil.local/ns/a/sa/b", allowed) is None
    # Outside every trust domain, so outside the allowed ones: unauthenticated.
    assert workload_for("frontend.shop.svc", allowed) is None
    # Configured names may be written in upper case; trust domains are case-insensitive.
    assert (
        workload_for("spiffe://cluster.local/ns/a/sa/b", frozenset({"Cluster.Local"})) is not None
    )


@pytest.mark.parametrize(
    "principal", ["spiffe://td/ns/a/../sa/b", "SPIFFE://td/ns/a/sa/b", "spiffe://td/x/"]
)
def test_broken_spiffe_is_never_a_workload(principal: str) -> None:
    # Not even without trust domains: a prefix rule like spiffe://td/ns/a/* must not match it.
    assert workload_for(principal, None) is None


@pytest.mark.parametrize("principal", ["CN=a\r\nx-admin: 1", "front\x00end", " front", "x\x7f"])
def test_principal_that_cannot_be_a_header_is_unauthenticated(principal: str) -> None:
    # It would be sent upstream in x-authz-principal, a header Envoy would refuse (503).
    assert workload_for(principal, None) is None
