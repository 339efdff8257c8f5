"""The soonest client certificate expiry per trust domain, from real certificates."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path

from cryptography import x509

from authz.model import Decision, Request, Verdict
from authz.observe.cert_expiry import PeerCertificateExpiry
from tests.support.certs import CertAuthority

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
ORDERS = "spiffe://cluster.local/ns/shop/sa/orders"


def check(observer: PeerCertificateExpiry, principal: str, pem: str) -> None:
    request = Request(
        method="GET", path="/", host="h", peer_certificate=urllib.parse.quote(pem, safe="")
    )
    verdict = Verdict(Decision(True, 200, "r"), "id", principal=principal)
    observer(request, verdict, 0.0)


def not_after(pem: str) -> float:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp()


def test_soonest_of_each_principals_latest_certificate(tmp_path: Path) -> None:
    ca = CertAuthority("mesh")
    old = ca.issue(tmp_path, "old", common_name="f", uri_sans=[FRONTEND], expired=True)
    new = ca.issue(tmp_path, "new", common_name="f", uri_sans=[FRONTEND])
    orders = ca.issue(tmp_path, "orders", common_name="o", uri_sans=[ORDERS])
    observer = PeerCertificateExpiry()
    old_pem, new_pem, orders_pem = (c.cert.read_text() for c in (old, new, orders))

    check(observer, FRONTEND, old_pem)
    check(observer, ORDERS, orders_pem)
    assert observer.soonest() == {"cluster.local": not_after(old_pem)}
    # The frontend rotated: its old certificate no longer counts.
    check(observer, FRONTEND, new_pem)
    assert observer.soonest() == {"cluster.local": min(not_after(new_pem), not_after(orders_pem))}
    assert observer.soonest()["cluster.local"] > dt.datetime.now(dt.UTC).timestamp()
    # No accepted workload, or no certificate: nothing recorded.
    check(PeerCertificateExpiry(), "", new_pem)
    empty = PeerCertificateExpiry()
    empty(None, Verdict(Decision(False, 400, "invalid_path"), "id"), 0.0)
    assert empty.soonest() == {}
