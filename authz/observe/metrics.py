"""Prometheus metrics, in a registry of their own (never the process-global default one, so
tests and several apps in one process do not collide).

| metric | labels | what |
|---|---|---|
| `authz_checks_total` | decision, reason | checks answered |
| `authz_check_duration_seconds` | decision | time from CheckRequest to CheckResponse |
| `grpc_server_handled_total` | grpc_type, grpc_service, grpc_method, grpc_code | RPCs done |
| `grpc_server_handling_seconds` | grpc_type, grpc_service, grpc_method | RPC duration |
| `authz_jwks_fetches_total` | issuer, result | JWKS load attempts (result: ok, error) |
| `authz_jwks_state` | issuer, state | 1 for the state: ready, stale, pending, unavailable |
| `authz_jwks_key_set_age_seconds` | issuer | since the key set in use was loaded |
| `authz_introspection_requests_total` | provider, outcome | requests to RFC 7662 endpoints |
| `authz_introspection_request_seconds` | provider | their duration |
| `authz_introspection_cache_hits_total` | provider | checks answered from the introspection cache |
| `authz_policy_reloads_total` | result | policy reload attempts (ok, error, export_error) |
| `authz_policy_last_reload_success_timestamp_seconds` | | last good load (start, reload) |
| `authz_policy_rules` | | rules in the policy set in force |
| `authz_policy_info` | revision | 1 for the revision in force |
| `authz_decision_log_dropped_total` | | decision log records not written |
| `authz_trace_spans_dropped_total` | | spans not exported: the export queue was full |
| `authz_log_lines_suppressed_total` | logger | client-caused log lines left out (authz.logs) |
| `authz_build_info` | version, python, grpc | 1 |
| `process_*`, `python_*` | | the prometheus_client process, platform and GC collectors |

Every label set is bounded by the code or by the operator, never by policy size or traffic:
`reason` is a reason code (`authz.reasons.Reason`), `rule` when a rule decided (its name is in
the decision log) or `other`, so a policy of 10,000 rules makes no more series than one of 10.
The gRPC metrics are go-grpc-prometheus's, filled by `authz.server.MetricsInterceptor` for the
registered methods only. Values that are only true "now" (rules, revision, drops, key states)
are read at scrape time through callbacks, so they can never go stale or miss an update.
"""

from __future__ import annotations

import bisect
import itertools
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Protocol

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from authz.logs import CLIENT_CAUSED, CLIENT_LINES
from authz.model import Request, Verdict
from authz.reasons import CODES

# The `_created` twin of every counter and histogram doubles the series for a value nobody
# graphs; peers (Go and Java clients, go-grpc-prometheus) do not export it. Process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
RULE_REASON = "rule"  # the `reason` label of a decision a rule made
RATE_LIMIT_REASON = "rate_limit"  # a 429 of a rate limit (its name is in the decision log)
OTHER_REASON = "other"  # a reason that is neither a code nor a rule: a bug, still one series
KEY_STATES = ("ready", "stale", "pending", "unavailable")

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


class KeyFacts(Protocol):
    """What the metrics read about one key source (`authz.identity.keys.KeyState` fits)."""

    @property
    def issuer(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def loaded_at(self) -> float | None: ...


class Metrics:
    """The service's metrics. `__call__` is an `authz.server.Observer`; `record_fetch` fits
    `KeyRegistry.add_fetch_listener`; `record_reload` is a `PolicyReloader` listener;
    `rpc` feeds `authz.server.MetricsInterceptor`."""

    def __init__(
        self,
        *,
        policy: Callable[[], PolicyFacts | None] | None = None,
        decision_log_dropped: Callable[[], int] | None = None,
        key_states: Callable[[], Iterable[KeyFacts]] | None = None,
        policy_loaded_at: float | None = None,
        rate_limit_store: Callable[[], Mapping[str, str | float]] | None = None,
        trace_spans_dropped: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self._checks = _ChecksCollector()
        self.registry.register(self._checks)
        self._rpcs = _RpcCollector()
        self.registry.register(self._rpcs)
        self._fetches = Counter(
            "authz_jwks_fetches",
            "JWKS load attempts, by issuer and result (ok, error).",
            ("issuer", "result"),
            registry=self.registry,
        )
        self._reloads = Counter(
            "authz_policy_reloads",
            "Policy reload attempts, by result (ok, error, export_error).",
            ("result",),
            registry=self.registry,
        )
        for result in ("ok", "error"):  # show both series at 0 so rate() works from the start
            self._reloads.labels(result)
        self._reloaded = Gauge(
            "authz_policy_last_reload_success_timestamp_seconds",
            "When the policy set was last loaded successfully (at start or by a reload).",
            registry=self.registry,
        )
        if policy_loaded_at is not None:
            self._reloaded.set(policy_loaded_at)
        build = Gauge(
            "authz_build_info",
            "1, labelled with the versions this process runs.",
            ("version", "python", "grpc"),
            registry=self.registry,
        )
        build.labels(_version(), platform.python_version(), grpc.__version__).set(1)
        self.registry.register(
            _Snapshot(policy, decision_log_dropped, key_states, trace_spans_dropped)
        )
        if rate_limit_store is not None:
            self.registry.register(_RateLimitStore(rate_limit_store))

    # -- observers -------------------------------------------------------------------------

    def __call__(self, request: Request | None, verdict: Verdict, seconds: float) -> None:
        decision = verdict.decision
        reason = decision.reason
        # Rule names are many and the operator's: they share one series per decision (the
        # name is in the decision log). So the label set stays small whatever the policy.
        if reason not in CODES:
            if decision.rule is not None:
                reason = RULE_REASON
            elif decision.status == 429:
                reason = RATE_LIMIT_REASON
            else:
                reason = OTHER_REASON
        self._checks.record(decision.allowed, reason, seconds)

    def record_fetch(self, issuer: str, result: FetchOutcome) -> None:
        """A JWKS load attempt finished (`KeyRegistry` fetch listener)."""
        self._fetches.labels(issuer, "ok" if result.ok else "error").inc()

    def record_reload(self, result: str) -> None:
        """A policy reload attempt finished (`PolicyReloader` listener): ok, error (rejected)
        or export_error (in force, its copy for Envoy not written)."""
        self._reloads.labels(result).inc()
        if result != "error":
            self._reloaded.set(time.time())

    def rpc(self, grpc_type: str, full_method: str) -> RpcMetrics:
        """The gRPC metrics of one method (`/package.Service/Method`), for the interceptor to
        keep and feed on every call."""
        return self._rpcs.method(grpc_type, full_method)

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


# The `le` label of each bucket, spelled as prometheus_client spells its own.
_BOUNDS = [*(floatToGoString(b) for b in LATENCY_BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]


class _Histogram:
    """Bucket counts and a sum, as plain numbers: the owner holds the lock.

    Counter.inc plus Histogram.observe of prometheus_client take a lock each and cost some
    2.5 us per check on a path of about 50 us; one lock and a bisect cost a third of that.
    These are read at scrape time by the collectors below.
    """

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound counts in that bucket (Prometheus `le`).
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def sample(self) -> tuple[list[tuple[str, float]], float]:
        """(cumulative buckets by `le`, sum), as HistogramMetricFamily takes them."""
        cumulative = itertools.accumulate(self.buckets)
        return list(zip(_BOUNDS, cumulative, strict=True)), self.sum


class _ChecksCollector:
    """`authz_checks_total{decision,reason}` and `authz_check_duration_seconds{decision}`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[bool, str], int] = {}
        self._latency: dict[bool, _Histogram] = {True: _Histogram(), False: _Histogram()}

    def record(self, allowed: bool, reason: str, seconds: float) -> None:
        with self._lock:
            key = (allowed, reason)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._latency[allowed].observe(seconds)

    def collect(self) -> Iterator[Metric]:
        checks = CounterMetricFamily(
            "authz_checks",
            "Checks answered, by decision and reason (a reason code, or `rule` when a rule "
            "decided: its name is in the decision log).",
            labels=("decision", "reason"),
        )
        latency = HistogramMetricFamily(
            "authz_check_duration_seconds",
            "Time to answer a check, by decision.",
            labels=("decision",),
        )
        with self._lock:
            counts = sorted(self._counts.items())
            histograms = [(allowed, h.sample()) for allowed, h in self._latency.items()]
            seen = {allowed for allowed, _ in self._counts}
        for (allowed, reason), count in counts:
            checks.add_metric([_DECISION[allowed], reason], count)
        for allowed, (buckets, total) in histograms:
            if allowed in seen:  # like a labelled Histogram: a series once it was used
                latency.add_metric([_DECISION[allowed]], buckets, total)
        yield checks
        yield latency


class RpcMetrics:
    """The handled counts (by code) and the duration histogram of one gRPC method."""

    __slots__ = ("_lock", "handled_by_code", "labels", "seconds")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self._lock = threading.Lock()
        self.handled_by_code: dict[str, int] = {}
        self.seconds = _Histogram()

    def handled(self, code: str, seconds: float) -> None:
        """`code` is a `grpc.StatusCode` name (OK, CANCELLED, ...): at most 17 series."""
        with self._lock:
            self.handled_by_code[code] = self.handled_by_code.get(code, 0) + 1
            self.seconds.observe(seconds)

    def snapshot(self) -> tuple[dict[str, int], tuple[list[tuple[str, float]], float]]:
        with self._lock:
            return dict(self.handled_by_code), self.seconds.sample()


_DECISION = {True: "allow", False: "deny"}


class _RpcCollector:
    """go-grpc-prometheus's server metrics, from the `RpcMetrics` of each method served."""

    LABELS = ("grpc_type", "grpc_service", "grpc_method")

    def __init__(self) -> None:
        self._methods: dict[str, RpcMetrics] = {}
        self._lock = threading.Lock()

    def method(self, grpc_type: str, full_method: str) -> RpcMetrics:
        with self._lock:
            found = self._methods.get(full_method)
            if found is None:
                service, _, name = full_method.lstrip("/").rpartition("/")
                found = self._methods[full_method] = RpcMetrics((grpc_type, service, name))
            return found

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            labels=(*self.LABELS, "grpc_code"),
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC, until its last message was sent.",
            labels=self.LABELS,
        )
        with self._lock:
            methods = list(self._methods.values())
        for rpc in methods:
            by_code, (buckets, total) = rpc.snapshot()
            labels = list(rpc.labels)
            for code, value in sorted(by_code.items()):
                handled.add_metric([*labels, code], value)
            seconds.add_metric(labels, buckets, total)
        yield handled
        yield seconds


def _version() -> str:
    try:
        return metadata.version("authz")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Snapshot:
    """Scrape-time values: the policy set in force, the decision log's and the tracer's drops,
    the key sets."""

    def __init__(
        self,
        policy: Callable[[], PolicyFacts | None] | None,
        dropped: Callable[[], int] | None,
        key_states: Callable[[], Iterable[KeyFacts]] | None,
        spans_dropped: Callable[[], int] | None = None,
    ) -> None:
        self._policy = policy
        self._dropped = dropped
        self._key_states = key_states
        self._spans_dropped = spans_dropped

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
        spans = CounterMetricFamily(
            "authz_trace_spans_dropped",
            "Trace spans not exported: the export queue was full (the collector is slow or down).",
        )
        spans.add_metric([], self._spans_dropped() if self._spans_dropped is not None else 0)
        yield spans
        lines = CounterMetricFamily(
            "authz_log_lines_suppressed",
            "Log lines a client can cause that were left out: one per kind and minute is written.",
            labels=("logger",),
        )
        suppressed = CLIENT_LINES.counts()
        for name in CLIENT_CAUSED:
            lines.add_metric([name], suppressed.get(name, 0))
        yield lines
        yield from self._keys()

    def _keys(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "authz_jwks_state",
            "1 for each JWT provider's key state: ready; stale (the last fetch failed, the last "
            "good keys still verify); pending (first fetch not done); unavailable (no keys: "
            "its tokens are refused with jwt_keys_unavailable).",
            labels=("issuer", "state"),
        )
        age = GaugeMetricFamily(
            "authz_jwks_key_set_age_seconds",
            "Seconds since the key set a JWT provider uses was loaded (absent without one).",
            labels=("issuer",),
        )
        now = time.time()
        # One issuer may have several sources (the same issuer with two key sources): report
        # the worst state and the oldest key set, so one series per issuer.
        worst: dict[str, str] = {}
        oldest: dict[str, float] = {}
        for source in self._key_states() if self._key_states is not None else ():
            issuer = source.issuer
            if KEY_STATES.index(source.state) >= KEY_STATES.index(worst.get(issuer, "ready")):
                worst[issuer] = source.state
            if source.loaded_at is not None:
                oldest[issuer] = min(oldest.get(issuer, now), source.loaded_at)
        for issuer, current in sorted(worst.items()):
            for name in KEY_STATES:
                state.add_metric([issuer, name], 1 if name == current else 0)
        for issuer, loaded_at in sorted(oldest.items()):
            age.add_metric([issuer], max(0.0, now - loaded_at))
        yield state
        yield age


class _RateLimitStore:
    """The rate-limit store's state, read from `Counter.status()` at scrape time."""

    def __init__(self, status: Callable[[], Mapping[str, str | float]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        shared = GaugeMetricFamily(
            "authz_rate_limit_store_shared",
            "1 while rate limits are counted in the shared store (Redis), 0 while this process "
            "counts locally (no store configured, or the store is down, slow or answering "
            "garbage).",
            labels=("store",),
        )
        shared.add_metric([str(status.get("store", "memory"))], status.get("state") == "shared")
        yield shared
        fallbacks = CounterMetricFamily(
            "authz_rate_limit_store_fallbacks",
            "Times this process went from the shared store to local counting.",
        )
        fallbacks.add_metric([], int(status.get("fallbacks", 0)))
        yield fallbacks
        late = CounterMetricFamily(
            "authz_rate_limit_late_checks",
            "Checks decided locally because the store's batch did not come in time.",
        )
        late.add_metric([], int(status.get("late_checks", 0)))
        yield late
        lies = CounterMetricFamily(
            "authz_rate_limit_store_lies",
            "Lease rounds whose replies the store could not have given honestly (a counter that "
            "shrank or is out of range): the store is then treated as down.",
        )
        lies.add_metric([], int(status.get("lies", 0)))
        yield lies
