"""Prometheus metrics, in a registry of their own (never the process-global default one, so
tests and several apps in one process do not collide).

| metric | labels | what |
|---|---|---|
| `authz_checks_total` | decision, reason | checks answered |
| `authz_check_duration_seconds` | decision | time from CheckRequest to CheckResponse |
| `authz_jwks_fetches_total` | issuer, result | JWKS load attempts (result: ok, error) |
| `authz_policy_reloads_total` | result | policy reload attempts (result: ok, error) |
| `authz_policy_rules` | | rules in the policy set in force |
| `authz_policy_info` | revision | 1 for the revision in force |
| `authz_decision_log_dropped_total` | | decision log records not written |

`reason` is a stable reason code or a rule name, so it is bounded by the policy; as a last guard
against a label explosion, reasons beyond `MAX_REASONS` distinct values count as `other`.
Values that are only true "now" (rules, revision, drops) are read at scrape time through
callbacks, so they can never go stale or miss an update.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from authz.model import Request, Verdict

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_REASONS = 1000
OTHER_REASON = "other"

# Checks take tens of microseconds when keys and policies are warm; Envoy's ext_authz timeout
# is typically 200 ms to 1 s. Buckets cover both ends.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class PolicyFacts(Protocol):
    """What the metrics read from the policy set in force (`authz.policy.PolicySet` fits)."""

    @property
    def revision(self) -> str: ...

    @property
    def rule_count(self) -> int: ...


class FetchOutcome(Protocol):
    """What the metrics read from a JWKS load attempt (`authz.identity.FetchResult` fits)."""

    @property
    def ok(self) -> bool: ...


class Metrics:
    """The service's metrics. `__call__` is an `authz.server.Observer`; `record_fetch` fits
    `KeyRegistry.add_fetch_listener`; `record_reload` fits `PolicyReloader.add_listener`."""

    def __init__(
        self,
        *,
        policy: Callable[[], PolicyFacts | None] | None = None,
        decision_log_dropped: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._checks = Counter(
            "authz_checks",
            "Checks answered, by decision and reason (a reason code or the deciding rule).",
            ("decision", "reason"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "authz_check_duration_seconds",
            "Time to answer a check, by decision.",
            ("decision",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._fetches = Counter(
            "authz_jwks_fetches",
            "JWKS load attempts, by issuer and result (ok, error).",
            ("issuer", "result"),
            registry=self.registry,
        )
        self._reloads = Counter(
            "authz_policy_reloads",
            "Policy reload attempts, by result (ok, error).",
            ("result",),
            registry=self.registry,
        )
        for result in ("ok", "error"):  # show both series at 0 so rate() works from the start
            self._reloads.labels(result)
        self._lock = threading.Lock()
        # (decision, reason) -> (counter child, histogram child): `labels()` takes a lock and
        # builds a tuple each call; a dict lookup is what a check should pay.
        self._children: dict[tuple[bool, str], tuple[Counter, Histogram]] = {}
        self._reasons: set[str] = set()
        self.registry.register(_Snapshot(policy, decision_log_dropped))

    # -- observers -------------------------------------------------------------------------

    def __call__(self, request: Request | None, verdict: Verdict, seconds: float) -> None:
        decision = verdict.decision
        key = (decision.allowed, decision.reason)
        children = self._children.get(key)
        if children is None:
            children = self._child(key)
        children[0].inc()
        children[1].observe(seconds)

    def _child(self, key: tuple[bool, str]) -> tuple[Counter, Histogram]:
        allowed, reason = key
        label = "allow" if allowed else "deny"
        with self._lock:
            if reason not in self._reasons:
                if len(self._reasons) >= MAX_REASONS:
                    reason = OTHER_REASON
                else:
                    self._reasons.add(reason)
            children = (self._checks.labels(label, reason), self._latency.labels(label))
            # Only the bounded set of real reasons is cached; an "other" reason is looked up
            # again next time, which keeps the cache bounded too.
            if reason == key[1]:
                self._children[key] = children
        return children

    def record_fetch(self, issuer: str, result: FetchOutcome) -> None:
        """A JWKS load attempt finished (`KeyRegistry` fetch listener)."""
        self._fetches.labels(issuer, "ok" if result.ok else "error").inc()

    def record_reload(self, ok: bool) -> None:
        """A policy reload attempt finished (`PolicyReloader` listener)."""
        self._reloads.labels("ok" if ok else "error").inc()

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Snapshot:
    """Scrape-time values: the policy set in force and the decision log's drops."""

    def __init__(
        self,
        policy: Callable[[], PolicyFacts | None] | None,
        dropped: Callable[[], int] | None,
    ) -> None:
        self._policy = policy
        self._dropped = dropped

    def collect(self) -> Iterator[Metric]:
        policy = self._policy() if self._policy is not None else None
        rules = GaugeMetricFamily("authz_policy_rules", "Rules in the policy set in force.")
        rules.add_metric([], policy.rule_count if policy is not None else 0)
        yield rules
        if policy is not None:
            info = InfoMetricFamily("authz_policy", "The revision of the policy set in force.")
            info.add_metric([], {"revision": policy.revision})
            yield info
        dropped = CounterMetricFamily(
            "authz_decision_log_dropped",
            "Decision log records not written (queue full or write failed).",
        )
        dropped.add_metric([], self._dropped() if self._dropped is not None else 0)
        yield dropped
