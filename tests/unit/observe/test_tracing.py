"""authz.observe.tracing in process: parents, settings, drops, and nothing at all when off.
The export itself is tested through the real process (tests/integration/test_tracing.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from authz.config_file import load_settings
from authz.errors import ConfigError
from authz.model import Decision, Verdict
from authz.observe import Metrics
from authz.observe.tracing import Tracing, parent_context, traces_url
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[3]
VERDICT = Verdict(Decision(allowed=True, status=200, reason="public", rule="public"), "id-1")


def test_tracing_off_imports_nothing_and_adds_no_observer() -> None:
    # A fresh interpreter: what `authz serve` without --otlp-endpoint loads.
    code = (
        "import sys\n"
        "from authz.app import build_app\n"
        "from authz.config import Settings\n"
        "app = build_app(Settings(policies='policies'))\n"
        "assert app.tracing is None and app.service.tracer is None\n"
        "app.close()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_without_the_extra_serve_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from authz.cli import main\n"
        "sys.exit(main(['serve', '--policies', 'policies', '--listen', '127.0.0.1:1',\n"
        "               '--otlp-endpoint', 'http://127.0.0.1:1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    # This Python's own pip: a bare `pip` may be another's, or fetch another package.
    needs = f"--otlp-endpoint needs OpenTelemetry: {sys.executable} -m pip install 'authz[otel]'"
    assert needs in done.stderr
    assert "Traceback" not in done.stderr


def test_parent_context_prefers_w3c_and_reads_b3() -> None:
    from opentelemetry import trace

    def ids(headers: dict[str, str]) -> tuple[str, str] | None:
        context = parent_context(headers)
        if context is None:
            return None
        span = trace.get_current_span(context).get_span_context()
        return f"{span.trace_id:032x}", f"{span.span_id:016x}"

    w3c = f"00-{'a' * 32}-{'b' * 16}-01"
    assert ids({}) is None
    assert ids({"authorization": "Bearer x"}) is None
    assert ids({"traceparent": w3c}) == ("a" * 32, "b" * 16)
    b3 = {"x-b3-traceid": "c" * 32, "x-b3-spanid": "d" * 16, "x-b3-sampled": "1"}
    assert ids({"traceparent": w3c, **b3}) == ("a" * 32, "b" * 16)
    # A broken traceparent does not hide a good B3 context.
    assert ids({"traceparent": "00-zz-yy-01", **b3}) == ("c" * 32, "d" * 16)
    assert ids({"b3": f"{'c' * 32}-{'e' * 16}-1"}) == ("c" * 32, "e" * 16)
    assert ids({"traceparent": "garbage", "x-b3-traceid": "nothex"}) is None


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"


def test_settings_are_checked() -> None:
    good = load_settings(
        flags={
            "otlp_endpoint": "http://127.0.0.1:4318",
            "trace_sample_ratio": 0.25,
            "service_name": "edge-authz",
            "resource_attributes": ["deployment.environment=prod"],
        },
        check_paths=False,
    )
    assert good.otlp_endpoint == "http://127.0.0.1:4318"
    assert good.trace_sample_ratio == 0.25
    assert good.resource_attributes == ("deployment.environment=prod",)
    env = load_settings(
        environ={"AUTHZ_OTLP_ENDPOINT": "https://c.example", "AUTHZ_TRACE_SAMPLE_RATIO": "1"},
        check_paths=False,
    )
    assert (env.otlp_endpoint, env.trace_sample_ratio) == ("https://c.example", 1.0)
    for flags, expected in (
        ({"otlp_endpoint": "grpc://c:4317"}, "must be an http:// or https:// URL"),
        ({"otlp_endpoint": "http://c:4318/?token=s3cret"}, "must not carry a query"),
        ({"otlp_endpoint": "http://user:pw@c:4318"}, "credentials"),
        ({"trace_sample_ratio": 1.5}, "must be from 0 to 1"),
        ({"resource_attributes": ["no-equals"]}, "must be KEY=VALUE"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_settings(flags=flags, check_paths=False)


def test_a_full_queue_drops_spans_counts_them_and_never_blocks() -> None:
    # Nothing listens: the exporter is stuck retrying, so the bounded queue fills.
    tracing = Tracing(f"http://127.0.0.1:{free_port()}", ratio=1.0, max_queue_size=4)
    metrics = Metrics(trace_spans_dropped=lambda: tracing.dropped)
    try:
        for _ in range(100):
            tracing(None, VERDICT, 0.001)
        # The exporter holds at most one batch of 4 and the queue 4 more: the rest is dropped.
        assert tracing.dropped >= 100 - 8
        assert f"authz_trace_spans_dropped_total {float(tracing.dropped)}" in (
            metrics.render().decode()
        )
    finally:
        started = time.monotonic()
        tracing.close()
        assert time.monotonic() - started < 30  # bounded by the export timeout
