"""The decision log's `request_id` means one thing on both doors: the request's `x-request-id`
(Envoy's request id, which the upstream receives too), never Envoy's internal stream id
(issue 25.10). Checked through a real Envoy in front of each door."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import https
from tests.support.envoy import Envoy
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.service import REPO_ROOT, ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

PRINCIPAL = "spiffe://cluster.local/ns/shop/sa/frontend"


def _request_ids(envoy: Envoy, upstream: EchoUpstream, log: Path) -> list[tuple[str, str]]:
    """(the upstream's x-request-id, the decision log's request_id) for one allowed request."""
    upstream.clear()
    answer = https.request(envoy.url, "/healthz", headers={"host": "shop.example.com"})
    assert answer.status == 200, answer.text
    seen = upstream.requests[-1]
    decision_id = seen.header("x-authz-decision-id")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record["decision_id"] == decision_id:
                return [(seen.header("x-request-id") or "", record["request_id"])]
        time.sleep(0.05)
    raise AssertionError(f"no decision log line for {decision_id}")


def test_both_doors_log_the_x_request_id_the_upstream_sees(
    tmp_path: Path, upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    policies = REPO_ROOT / "policies"
    grpc_log, http_log = tmp_path / "grpc.jsonl", tmp_path / "http.jsonl"
    with ServiceProcess(policies, extra_args=("--decision-log", str(grpc_log))) as service:
        envoy = envoy_factory(service.address)
        ((sent, logged),) = _request_ids(envoy, upstream, grpc_log)
        assert len(sent) == 36 and logged == sent  # Envoy's UUID, not its stream id
    with (
        ServeProcess(policies, "--no-grpc", "--decision-log", str(http_log)) as http_service,
        HttpModeEnvoy(http_service, upstream, tmp_path / "envoy-http") as http_envoy,
    ):
        ((sent, logged),) = _request_ids(http_envoy, upstream, http_log)
        assert len(sent) == 36 and logged == sent
