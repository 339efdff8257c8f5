"""Token introspection metrics (docs/operations.md): requests to endpoints by outcome, their
latency, and cache hits. Labels: the provider's name (the operator's, bounded by the policy)
and the outcome (active, inactive, error)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["IntrospectionMetrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IntrospectionMetrics:
    """`record_request` and `record_hit` are an `Introspector`'s listeners."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "authz_introspection_requests",
            "Requests to introspection endpoints, by provider and outcome "
            "(active, inactive, error: down, slow, garbage).",
            ("provider", "outcome"),
            registry=registry,
        )
        self._seconds = Histogram(
            "authz_introspection_request_seconds",
            "Time of a request to an introspection endpoint, by provider.",
            ("provider",),
            buckets=_BUCKETS,
            registry=registry,
        )
        self._hits = Counter(
            "authz_introspection_cache_hits",
            "Checks answered from the introspection cache, by provider.",
            ("provider",),
            registry=registry,
        )

    def record_request(self, provider: str, outcome: str, seconds: float) -> None:
        self._requests.labels(provider, outcome).inc()
        self._seconds.labels(provider).observe(seconds)

    def record_hit(self, provider: str) -> None:
        self._hits.labels(provider).inc()
