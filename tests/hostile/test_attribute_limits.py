"""Issue 10.2, 10.4, 10.7 against the real process: every attribute the service reads is bounded,
so a stream of maximal and over-limit inputs over gRPC cannot grow its memory, and every refusal
reaches the decision log and the metrics with its stable reason code.

Memory is read from /proc: the peak resident set (VmHWM) after the stream, minus the resident
set (VmRSS) after a warm-up, must stay under `RSS_BOUND_MIB`. Before the limits, 120 distinct
4 MiB principals alone grew it by ~535 MB.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz.config import Limits
from tests.hostile.service import (
    HOST,
    ServiceProcess,
    check_request,
    metadata_reason,
    parse_response,
    response_status,
)
from tests.support.certs import make_pki
from tests.support.ports import LOOPBACK, free_port
from tests.support.scale import scaled

RSS_BOUND_MIB = 50
# Distinct principals at the size limit: 1,500 of them are twice what the principal caches'
# 4 MiB byte budget holds (about 6 KiB an entry), so the bound is reached and held.
PRINCIPALS = scaled(1500, 5000)
# Distinct 4 MiB attributes of each kind: 30 of them would hold 120 MiB if anything kept them,
# well over RSS_BOUND_MIB.
OVERSIZED = scaled(30, 120)
LIMITS = Limits()
MIB = 1024 * 1024
# The gRPC server's own receive limit (authz.server.build_server): a bigger message is refused
# by gRPC before our code sees it, so 4 MiB attributes are the largest that reach inbound.
GRPC_MAX_RECEIVE = 8 * MIB
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"

POLICY = f"""\
hosts: [{HOST}]
rules:
  - name: frontend
    action: allow
    from: [{{principals: ["{FRONTEND}", "cluster.local/ns/other/sa/*"]}}]
"""


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _message(
    *,
    method: str = "GET",
    host: str = HOST,
    principal: str = "",
    certificate: str = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    message = check_request(method, host, "/api/x", headers)
    message.attributes.source.principal = principal
    message.attributes.source.certificate = certificate
    return bytes(message.SerializeToString())


def _unique(index: int, size: int, prefix: str = "") -> str:
    """A distinct value of exactly `size` ASCII bytes (distinct, so no cache can dedupe it)."""
    head = f"{prefix}{index:08d}-"
    return head + "x" * (size - len(head))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("limits")
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(POLICY)
    pki = make_pki(root / "pki")
    admin = f"{LOOPBACK}:{free_port()}"
    log = root / "decisions.jsonl"
    args = ("--decision-log", str(log), "--admin", admin, "--ca-bundle", str(pki.ca))
    with ServiceProcess(policies, extra_args=(*args, "--trust-xfcc")) as process:
        process.decision_log = log  # type: ignore[attr-defined]
        process.admin = admin  # type: ignore[attr-defined]
        yield process


def _answer(service: ServiceProcess, data: bytes) -> tuple[int, str]:
    response = parse_response(service.check_bytes(data, timeout=30.0))
    return response_status(response), metadata_reason(response)


def test_a_stream_of_maximal_and_oversized_attributes_keeps_memory_bounded(
    service: ServiceProcess,
) -> None:
    big = 4 * MIB
    # Warm-up: every code path below runs once before the baseline is read.
    for index in range(3):
        _answer(service, _message(principal=_unique(index, big, "spiffe://td/")))
        _answer(
            service, _message(principal=_unique(index, LIMITS.max_principal_bytes, "spiffe://td/"))
        )
        _answer(service, _message(certificate=_unique(index, big)))
    baseline = _kib(service.pid, "VmRSS")

    seen: Counter[tuple[int, str]] = Counter()
    for index in range(OVERSIZED):  # over the limits: refused unread, never cached
        seen[_answer(service, _message(principal=_unique(index, big, "spiffe://td/")))] += 1
        seen[_answer(service, _message(certificate=_unique(index, big, "-----BEGIN")))] += 1
        # check_request sends the host twice (http.host and `:authority`): half the size.
        seen[_answer(service, _message(host=_unique(index, big // 2)))] += 1
        seen[
            _answer(service, _message(headers={"x-forwarded-client-cert": _unique(index, big)}))
        ] += 1
    # The host and XFCC also travel as headers (`:authority`): over the one-value bound, 431.
    assert seen == {
        (400, "attribute_too_large"): 2 * OVERSIZED,
        (431, "request_too_large"): 2 * OVERSIZED,
    }

    # At the limits: accepted and read, so they may be cached, but only up to the caches' sizes.
    at_limit: Counter[tuple[int, str]] = Counter()
    for index in range(PRINCIPALS):
        principal = _unique(
            index, LIMITS.max_principal_bytes, "spiffe://cluster.local/ns/other/sa/"
        )
        at_limit[_answer(service, _message(principal=principal))] += 1
    for index in range(600):
        xfcc = "URI=" + _unique(index, LIMITS.max_header_value_bytes - 4, "spiffe://td/")
        at_limit[_answer(service, _message(headers={"x-forwarded-client-cert": xfcc}))] += 1
    for index in range(300):
        # A certificate at the limit that does not verify: refused (and so not cached).
        certificate = _unique(index, LIMITS.max_certificate_bytes, "-----BEGIN")
        at_limit[_answer(service, _message(certificate=certificate))] += 1
    assert at_limit == {
        (200, "frontend"): PRINCIPALS,  # read, parsed and matched: nothing refused below its limit
        (403, "no_matching_rule"): 600,
        (403, "peer_certificate_invalid"): 300,
    }

    grown_mib = (_kib(service.pid, "VmHWM") - baseline) / 1024
    print(f"peak RSS - warm RSS: {grown_mib:.1f} MiB (bound {RSS_BOUND_MIB} MiB)")
    assert grown_mib < RSS_BOUND_MIB


def test_over_the_grpc_limit_is_refused_by_grpc(service: ServiceProcess) -> None:
    """Both 4 MiB attributes in one message: over gRPC's own 8 MiB, never reaches inbound."""
    data = _message(principal="p" * (4 * MIB), certificate="c" * (4 * MIB + 1))
    assert len(data) > GRPC_MAX_RECEIVE
    with pytest.raises(grpc.RpcError) as raised:
        service.check_bytes(data)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.process is not None and service.process.poll() is None


REFUSALS = [
    ("invalid_method", 400, {"method": "get"}),
    ("invalid_method", 400, {"method": "G\u00c9T"}),
    ("invalid_host", 400, {"host": "shop.example.com.."}),
    ("invalid_host", 400, {"host": "\u212a.example.com"}),
    ("invalid_host", 400, {"host": "shop.example.com\u00a0"}),
    ("invalid_host", 400, {"host": "shop.example.com:abc"}),
    ("attribute_too_large", 400, {"method": "M" * (LIMITS.max_method_bytes + 1)}),
    ("attribute_too_large", 400, {"host": "h" * (LIMITS.max_host_bytes + 1)}),
    ("attribute_too_large", 400, {"principal": "p" * (LIMITS.max_principal_bytes + 1)}),
    ("attribute_too_large", 400, {"certificate": "c" * (LIMITS.max_certificate_bytes + 1)}),
    ("request_too_large", 431, {"headers": {"x-a": "v" * (LIMITS.max_header_value_bytes + 1)}}),
]


def test_each_refusal_is_logged_and_counted_with_its_reason(service: ServiceProcess) -> None:
    log: Path = service.decision_log  # type: ignore[attr-defined]
    before = len(log.read_text().splitlines()) if log.exists() else 0
    for reason, status, fields in REFUSALS:
        assert _answer(service, _message(**fields)) == (status, reason), fields
    expected = [(reason, status) for reason, status, _ in REFUSALS]
    records: list[dict[str, Any]] = []
    for _ in range(100):  # the log is written off the request path: wait for the lines
        lines = log.read_text().splitlines()[before:]
        records = [json.loads(line) for line in lines]
        if len(records) >= len(expected):
            break
        time.sleep(0.1)
    assert [(r["reason"], r["status"]) for r in records] == expected
    assert all(r["decision"] == "deny" for r in records)

    with urllib.request.urlopen(f"http://{service.admin}/metrics", timeout=10) as answer:  # type: ignore[attr-defined]
        metrics = answer.read().decode()
    for reason in {reason for reason, _, _ in REFUSALS}:
        assert f'decision="deny",reason="{reason}"' in metrics, reason
