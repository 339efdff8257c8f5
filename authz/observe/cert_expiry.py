"""The soonest-expiring client certificate per trust domain, as a Prometheus gauge.

When Envoy sends the peer certificate (`include_peer_certificate: true`), each check records the
notAfter of the certificate its accepted workload presented. The gauge
`authz_peer_certificate_expiry_soonest_timestamp_seconds{trust_domain}` is, per trust domain, the
soonest notAfter among each principal's *latest* certificate: a rotated certificate replaces the
old one, so an alert on `... - time() < 7 * 86400` fires for a rotation that did not happen, not
for one that did. Bounded: at most `MAX_DOMAINS` domains and `MAX_PRINCIPALS` principals each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from authz.identity.spiffe import parse_spiffe_id
from authz.model import Request, Verdict
from authz.observe.decision_log import certificate_not_after

MAX_DOMAINS = 100
MAX_PRINCIPALS = 10_000
METRIC = "authz_peer_certificate_expiry_soonest_timestamp_seconds"


class PeerCertificateExpiry:
    """An `authz.server.Observer` and a Prometheus collector (register it on a registry)."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, float]] = {}  # domain -> principal -> notAfter
        self._lock = threading.Lock()

    def __call__(self, request: Request | None, verdict: Verdict, seconds: float) -> None:
        if request is None or not request.peer_certificate or not verdict.principal:
            return
        spiffe = parse_spiffe_id(verdict.principal)
        if spiffe is None:
            return
        not_after = certificate_not_after(request.peer_certificate)  # cached per PEM
        if not_after is None:
            return
        domain = spiffe.trust_domain
        with self._lock:
            principals = self._latest.get(domain)
            if principals is None:
                if len(self._latest) >= MAX_DOMAINS:
                    return
                principals = self._latest[domain] = {}
            if verdict.principal in principals or len(principals) < MAX_PRINCIPALS:
                principals[verdict.principal] = not_after

    def soonest(self) -> dict[str, float]:
        with self._lock:
            return {d: min(p.values()) for d, p in self._latest.items() if p}

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            METRIC,
            "Soonest notAfter (Unix time) among the latest client certificate of each principal, "
            "per trust domain.",
            labels=("trust_domain",),
        )
        for domain, when in sorted(self.soonest().items()):
            gauge.add_metric([domain], when)
        yield gauge
