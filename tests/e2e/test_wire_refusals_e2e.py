"""Issue 10.4 and 10.7 through a real Envoy: a lower-case method over HTTP/2 and host spellings
that Envoy forwards are refused with 400 by the service, and nothing reaches the upstream.
Before the fix `get` was upper-cased and matched the GET rule, while the upstream received
`get`; `shop.example.com..` lost a trailing dot twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from tests.support import https
from tests.support.ports import LOOPBACK
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

POLICY = "rules: [{name: reads, action: allow, to: [{methods: [GET]}]}]\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service for the module (each test has an Envoy of its own in front of it)."""
    policies = tmp_path_factory.mktemp("refusals") / "policies"
    policies.mkdir()
    (policies / "all.yaml").write_text(POLICY)
    with ServiceProcess(policies) as running:
        yield running


def h2c_status(port: int, method: str, authority: str, path: str = "/x") -> int:
    """One HTTP/2 request with prior knowledge (cleartext), headers sent exactly as given."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config)
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream,
            [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)],
            end_stream=True,
        )
        sock.sendall(connection.data_to_send())
        status = 0
        while True:
            data = sock.recv(65536)
            assert data, "Envoy closed the connection without an answer"
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                if isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {event.error_code}")
                if isinstance(event, h2.events.StreamEnded | h2.events.ResponseReceived) and status:
                    return status
            sock.sendall(connection.data_to_send())


def test_lower_case_method_over_http2_is_400(
    service: ServiceProcess, envoy_factory: EnvoyFactory, upstream: EchoUpstream
) -> None:
    envoy = envoy_factory(service.address)
    assert h2c_status(envoy.port, "GET", "shop.example.com") == 200
    assert [r.method for r in upstream.requests] == ["GET"]
    for method in ("get", "Get"):
        assert h2c_status(envoy.port, method, "shop.example.com") == 400, method
    assert len(upstream.requests) == 1  # nothing refused reached the upstream


# This Envoy is not hardened (no `strip_trailing_host_dot`): a dot that reaches the service
# stands for the second one a client sent past a hardened Envoy, and is refused like it.
@pytest.mark.parametrize(
    "host", ["shop.example.com.", "shop.example.com..", "shop.example.com:abc"]
)
def test_invalid_hosts_through_envoy_are_400(
    service: ServiceProcess, envoy_factory: EnvoyFactory, upstream: EchoUpstream, host: str
) -> None:
    envoy = envoy_factory(service.address)
    assert https.request(envoy.url, "/x", headers={"host": "shop.example.com:8080"}).status == 200
    answer = https.request(envoy.url, "/x", headers={"host": host})
    assert answer.status == 400, answer.text
    assert len(upstream.requests) == 1
