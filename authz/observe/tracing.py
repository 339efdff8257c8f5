"""OpenTelemetry tracing (issue 19): one `authz.check` span per check, in the request's trace.

The only module that imports OpenTelemetry (the `authz[otel]` extra), and only when
`settings.otlp_endpoint` is set: without it nothing here is imported and a check pays nothing.

Spans are written after the check, from what it returned: `Tracing` is called like an
`authz.server.Observer` with the request, the verdict and the duration, and builds the span with
the check's own start and end times. So the engine, the identity code and both front doors stay
free of tracing calls, and nothing here can change or delay an answer (the doors call observers
after the answer is built, and catch what they raise).

- Parent: the trace context of `carrier` (what the transport carried: the gRPC metadata, where
  Envoy's ext_authz client puts its own span's context) when it holds one, else of the request's
  headers (`traceparent`/`tracestate`, else B3 `x-b3-*` or `b3`). Sampling is
  ParentBased(TraceIdRatioBased(ratio)): a sampled parent is always followed, a check without
  one starts a trace with probability `ratio`.
- A cold JWT verification is a child span (`authz.jwt_verify`) with its own times; a token from
  the verified-token cache is only the `authz.token` attribute ("cached").
- A JWKS load is a root span of its own (`authz.jwks_fetch`), written on the fetcher thread;
  always sampled (at most a few per refresh period), so a failing IdP is visible at any ratio.
- Never a token, cookie, API key, header value or query string in an attribute: only the
  fields `check_attributes` lists, and the normalized path (which has no query).
- Export: a BatchSpanProcessor (bounded queue, its own thread); spans over the queue are
  dropped and counted (`dropped`, the `authz_trace_spans_dropped_total` metric); an exporter
  that fails is logged once until it succeeds again, never per span or per batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from authz.config import Settings
from authz.identity import FetchResult
from authz.model import Request, Verdict
from authz.reasons import Reason
from authz.workers import worker_index

log = logging.getLogger("authz.tracing")

CHECK_SPAN = "authz.check"
JWT_SPAN = "authz.jwt_verify"
INTROSPECTION_SPAN = "authz.introspection"
KEY_FETCH_SPAN = "authz.jwks_fetch"

MAX_QUEUE_SIZE = 2048  # spans waiting for export; over it they are dropped (and counted)
SCHEDULE_DELAY_MILLIS = 1000
MAX_EXPORT_BATCH_SIZE = 512
EXPORT_TIMEOUT_SECONDS = 5.0

# Headers that may hold a parent context: W3C Trace Context, then B3 (multi and single header).
_W3C = TraceContextTextMapPropagator()
_B3 = B3MultiFormat()  # reads `b3` as well as `x-b3-*`
_TRACE_HEADERS = frozenset({"traceparent", "x-b3-traceid", "b3"})

# The exporter and the batch processor log each failed batch and each dropped span; we say it
# once (ReportOnce) and count drops instead.
_QUIET_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal")


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: `endpoint` as given, or with /v1/traces when it has no path
    (as OTEL_EXPORTER_OTLP_ENDPOINT is read)."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path="/v1/traces"))
    return endpoint


def parent_context(headers: Mapping[str, str]) -> Context | None:
    """The trace context in `headers` (lower-case names), or None when they carry none."""
    if _TRACE_HEADERS.isdisjoint(headers):
        return None  # the common case, without the propagators' parsing
    for propagator in (_W3C, _B3):  # W3C first: Envoy's own format
        context = propagator.extract(headers)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None  # malformed: as if there were none


def check_attributes(request: Request | None, verdict: Verdict) -> dict[str, str | int]:
    """The attributes of a check's span. Only these, so no secret can reach a span."""
    decision = verdict.decision
    attributes: dict[str, str | int] = {
        "authz.decision": "allow" if decision.allowed else "deny",
        "authz.status": decision.status,
        "authz.reason": decision.reason,
        "authz.decision_id": verdict.decision_id,
        "authz.policy_revision": verdict.policy_revision,
    }
    if decision.rule is not None:
        attributes["authz.rule"] = decision.rule
    if verdict.token_check is not None:
        attributes["authz.token"] = "cached" if verdict.token_check.cached else "verified"
        attributes["authz.token_source"] = verdict.token_check.source
    if request is not None:
        attributes["http.request.method"] = request.method
        attributes["server.address"] = request.host
        attributes["url.path"] = request.path  # normalized: never the query
    return attributes


class _Sampler(Sampler):
    """ParentBased(TraceIdRatioBased(ratio)) for checks; JWKS loads always."""

    def __init__(self, ratio: float) -> None:
        self._checks = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        sampler = ALWAYS_ON if name == KEY_FETCH_SPAN else self._checks
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "authz(ParentBased(TraceIdRatioBased); JWKS loads always)"


class _Quiet(logging.Handler):
    """Takes the records of the OpenTelemetry exporter and batcher loggers (and of their
    children) instead of the root's handlers; keeps the first warning for ReportOnce to quote."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first = ""  # the first since `take`: the cause, before "gave up" messages

    def emit(self, record: logging.LogRecord) -> None:
        if not self.first:
            self.first = record.getMessage()[:300]

    def take(self) -> str:
        first, self.first = self.first, ""
        return first

    def install(self) -> None:
        for name in _QUIET_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.propagate = False


class ReportOnce(SpanExporter):
    """An exporter that says when exporting starts failing, once, and when it works again."""

    def __init__(self, inner: SpanExporter, url: str, quiet: _Quiet) -> None:
        self._inner = inner
        self._url = url
        self._quiet = quiet
        self.failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as error:  # the processor would log it per batch
            self._quiet.first = self._quiet.first or f"{type(error).__name__}: {error}"
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._quiet.take()
        if result is SpanExportResult.FAILURE and not self.failing:
            self.failing = True
            log.warning(
                "cannot export traces to %s (%s); spans are dropped until it answers (logged once)",
                self._url,
                self._quiet.take() or "export failed",
            )
        elif result is SpanExportResult.SUCCESS and self.failing:
            self.failing = False
            log.info("exporting traces to %s again", self._url)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that counts the spans its full queue drops."""

    def __init__(self, exporter: SpanExporter, max_queue_size: int) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=SCHEDULE_DELAY_MILLIS,
            max_export_batch_size=min(MAX_EXPORT_BATCH_SIZE, max_queue_size),
        )
        self.dropped = 0
        self._count_lock = threading.Lock()
        # The SDK's batcher (opentelemetry-sdk 1.45) drops the oldest span when its deque is
        # full and says so only in a log line and an opt-in metric: read its fill here.
        # tests/integration/test_tracing.py pins the count.
        self._batcher = self._batch_processor

    def on_end(self, span: ReadableSpan) -> None:
        batcher = self._batcher
        if len(batcher._queue) >= batcher._max_queue_size:
            with self._count_lock:
                self.dropped += 1
        super().on_end(span)


class Tracing:
    """Exports a span per check (call it as an `authz.server.Observer`, with `carrier` from
    the gRPC door) and one per JWKS load (`record_fetch` fits
    `KeyRegistry.add_fetch_listener`). Thread-safe; never raises into a check."""

    def __init__(
        self,
        endpoint: str,
        *,
        ratio: float = 0.0,
        service_name: str = "authz",
        resource_attributes: Sequence[str] = (),
        max_queue_size: int = MAX_QUEUE_SIZE,
    ) -> None:
        self.url = traces_url(endpoint)
        quiet = _Quiet()
        quiet.install()
        resource = Resource.create(_resource(service_name, resource_attributes))
        self._exporter = ReportOnce(
            OTLPSpanExporter(endpoint=self.url, timeout=EXPORT_TIMEOUT_SECONDS), self.url, quiet
        )
        self._processor = CountingBatchProcessor(self._exporter, max_queue_size)
        self._ratio = ratio
        self._provider = TracerProvider(sampler=_Sampler(ratio), resource=resource)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("authz")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        assert settings.otlp_endpoint is not None
        return cls(
            settings.otlp_endpoint,
            ratio=settings.trace_sample_ratio,
            service_name=settings.service_name,
            resource_attributes=settings.resource_attributes,
        )

    @property
    def dropped(self) -> int:
        """Spans not exported because the queue was full."""
        return self._processor.dropped

    def __call__(
        self,
        request: Request | None,
        verdict: Verdict,
        seconds: float,
        carrier: Mapping[str, str] | None = None,
    ) -> None:
        end = time.time_ns()
        parent = parent_context(carrier) if carrier else None
        if parent is None and request is not None:
            parent = parent_context(request.headers)
        # What the sampler would decide, without building a span to drop: a parent that says
        # "not sampled" is followed, and a check without one at ratio 0 starts nothing.
        if parent is None:
            if self._ratio == 0.0:
                return
        elif not trace.get_current_span(parent).get_span_context().trace_flags.sampled:
            return
        span = self._tracer.start_span(
            CHECK_SPAN, context=parent, kind=SpanKind.SERVER, start_time=end - int(seconds * 1e9)
        )
        if not span.is_recording():
            return  # not sampled: nothing more to build
        span.set_attributes(check_attributes(request, verdict))
        if verdict.decision.reason == Reason.INTERNAL_ERROR:
            span.set_status(Status(StatusCode.ERROR, "internal_error"))
        token = verdict.token_check
        if token is not None and not token.cached:
            child = self._tracer.start_span(
                INTROSPECTION_SPAN if token.source == "introspection" else JWT_SPAN,
                context=trace.set_span_in_context(span),
                start_time=token.started_ns,
            )
            child.end(end_time=token.started_ns + token.duration_ns)
        span.end(end_time=end)

    def record_fetch(self, issuer: str, result: FetchResult) -> None:
        end = time.time_ns()
        span = self._tracer.start_span(
            KEY_FETCH_SPAN,
            context=Context(),  # a root, whatever the thread's context
            kind=SpanKind.CLIENT,
            start_time=end - int(result.seconds * 1e9),
            attributes={
                "authz.issuer": issuer,
                "authz.trigger": result.trigger,
                "authz.keys": result.keys,
            },
        )
        if not result.ok:
            span.set_status(Status(StatusCode.ERROR, result.error or "fetch failed"))
        span.end(end_time=end)

    def flush(self, timeout_millis: int = 30000) -> bool:
        """Export every span queued so far (for benches and tests)."""
        return self._provider.force_flush(timeout_millis)

    def close(self) -> None:
        """Export what is queued (bounded by the export timeout), then stop. With the collector
        down, stop at once: retrying would only delay the exit."""
        if self._exporter.failing:
            self._exporter.shutdown()
        self._provider.shutdown()


def _resource(service_name: str, pairs: Sequence[str]) -> dict[str, str | int]:
    # service.instance.id tells apart the workers of one `--workers N` (each has its own
    # exporter) and the replicas of a deployment.
    attributes: dict[str, str | int] = {
        "service.name": service_name,
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
    }
    index = worker_index()
    if index is not None:
        attributes["authz.worker"] = index
    for pair in pairs:
        key, _, value = pair.partition("=")
        attributes[key.strip()] = value.strip()
    return attributes


__all__ = [
    "CHECK_SPAN",
    "JWT_SPAN",
    "KEY_FETCH_SPAN",
    "Tracing",
    "check_attributes",
    "parent_context",
]
