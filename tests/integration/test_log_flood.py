"""Issue 23.4 through the real process: headers any client can send that make a library warn
(an oversized `traceparent`, a malformed `tracestate`) write one line per minute, and the metric
counts the lines left out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_operations import BOUND
from tests.integration.test_tracing import TRACEPARENT, check, serve
from tests.support.otlp import OtlpReceiver

pytest.importorskip("opentelemetry.sdk", reason="needs the authz[otel] extra")

SENT = 40
TRACECONTEXT = "opentelemetry.trace.propagation.tracecontext"
SPAN = "opentelemetry.trace.span"


def test_client_caused_warnings_are_one_line_and_a_count(tmp_path: Path) -> None:
    with OtlpReceiver() as collector:
        service, _ = serve(tmp_path, collector.endpoint)
        try:
            for i in range(SENT):
                check(service, "/public/a", {"traceparent": f"00-{'a' * 600}-{i}"})
                bad_state = f"ok=1,bad member\nFORGED ERROR line {i}"
                check(service, "/public/a", {"traceparent": TRACEPARENT, "tracestate": bad_state})

            def suppressed(logger: str) -> float:
                name = "authz_log_lines_suppressed_total"
                return service.metrics().get((name, (("logger", logger),)), 0.0)

            deadline = time.monotonic() + BOUND
            while time.monotonic() < deadline and (
                suppressed(TRACECONTEXT) < SENT - 1 or suppressed(SPAN) < SENT - 1
            ):
                time.sleep(0.1)
            assert suppressed(TRACECONTEXT) == SENT - 1
            assert suppressed(SPAN) >= SENT - 1
            assert suppressed("authz.server") == 0
        finally:
            assert service.stop() == 0
    lines = service.stderr().splitlines()
    oversized = [line for line in lines if "traceparent header exceeded" in line]
    assert len(oversized) == 1, oversized
    members = [line for line in lines if "w3c identifiers format" in line]
    assert len(members) == 1, members
    assert "bad member\\nFORGED ERROR line 0" in members[0]
    assert not any(line.startswith("FORGED") for line in lines)
