"""One trace for Envoy and the service (issue 19): the real Envoy of the venv runs the tracing
part of deploy/envoy/envoy.yaml (its OpenTelemetry tracer, OTLP/HTTP), the real `authz serve`
exports with --otlp-endpoint, both to one real OTLP receiver on loopback. Envoy's ext_authz
span and our `authz.check` share the trace id, and ours is its child.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_deploy_config import ENVOY_YAML
from tests.integration.test_operations import Service
from tests.support.envoy import envoy_binary
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.ports import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _static(cluster: dict[str, Any], port: int) -> None:
    cluster["type"] = "STATIC"
    cluster.pop("dns_lookup_family", None)
    cluster["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": LOOPBACK, "port_value": port}}
                    }
                }
            ]
        }
    ]


def loopback_config(authz_port: int, collector_port: int) -> tuple[dict[str, Any], int, int]:
    """deploy/envoy/envoy.yaml as it is, with every address moved to loopback ports and a
    runtime layer that sends Envoy's spans at once."""
    config = copy.deepcopy(yaml.safe_load(ENVOY_YAML.read_text()))
    listen, admin = free_port(), free_port()
    config["admin"]["address"]["socket_address"] = {"address": LOOPBACK, "port_value": admin}
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": LOOPBACK, "port_value": listen}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    _static(clusters["authz"], authz_port)
    _static(clusters["shop"], free_port())  # nothing there: the checks are what is traced
    _static(clusters["otel_collector"], collector_port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    http_uri = hcm["tracing"]["provider"]["typed_config"]["http_service"]["http_uri"]
    http_uri["uri"] = f"http://{LOOPBACK}:{collector_port}/v1/traces"
    # Envoy's tracer sends its spans every 5 s, or once 5 are waiting: this test has 2, so it
    # would wait the 5 s. A runtime layer of this copy sends each at once (no default changes).
    layer = {"tracing.opentelemetry.min_flush_spans": 1}
    config["layered_runtime"] = {"layers": [{"name": "test", "static_layer": layer}]}
    return config, listen, admin


def request(url: str, headers: dict[str, str]) -> int:
    """The status; 0 when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_envoys_span_and_ours_are_one_trace(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copytree(REPO / "policies", policies, dirs_exist_ok=True)
    with OtlpReceiver() as collector:
        service = Service(
            [
                "--policies",
                str(policies),
                "--listen",
                "127.0.0.1:{grpc}",
                "--admin",
                "127.0.0.1:{admin}",
                "--otlp-endpoint",
                collector.endpoint,
            ],
            tmp_path / "serve.log",
        ).start()
        config, listen, admin = loopback_config(service.grpc_port, collector.port)
        config_path = tmp_path / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = (tmp_path / "envoy.log").open("wb")
        envoy = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(config_path),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while request(f"http://{LOOPBACK}:{admin}/ready", {}) != 200:
                assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "Envoy not ready"
                time.sleep(0.1)
            # A denied request (policies/shop.yaml: no identity) and one without a trace
            # context from the client: Envoy starts the trace (random_sampling 100%).
            status = request(f"http://{LOOPBACK}:{listen}/api/orders", {"host": "shop.example.com"})
            assert status in (401, 403), (tmp_path / "envoy.log").read_text()[-3000:]

            def complete(spans: list[ReceivedSpan]) -> bool:
                ours = [s for s in spans if s.name == "authz.check"]
                return bool(ours) and any(s.span_id == ours[0].parent_span_id for s in spans)

            spans = collector.wait_for(complete)
        finally:
            os.killpg(envoy.pid, signal.SIGTERM)
            envoy.wait(10)
            log.close()
            service.stop()

    (ours,) = [s for s in spans if s.name == "authz.check"]
    (parent,) = [s for s in spans if s.span_id == ours.parent_span_id]
    assert parent.resource["service.name"] == "envoy"
    assert ours.resource["service.name"] == "authz"
    assert parent.trace_id == ours.trace_id
    assert "ext_authz" in parent.name.lower() or "Authorization.Check" in parent.name, parent
    assert ours.attributes["authz.decision"] == "deny"
    # Envoy's request span is the root of the same trace.
    envoy_root = [s for s in spans if s.trace_id == ours.trace_id and s.parent_span_id == ""]
    assert envoy_root and envoy_root[0].resource["service.name"] == "envoy"
