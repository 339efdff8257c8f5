"""A Check client: one described request sent to a running service over gRPC, as Envoy's
ext_authz filter sends it, and the answer read back into plain values (`authz check`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import MessageToDict

from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from authz._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub


@dataclass(frozen=True, slots=True)
class Probe:
    """The request to describe to the service (what Envoy would put in the CheckRequest)."""

    method: str
    path: str
    host: str
    headers: Mapping[str, str]
    principal: str = ""  # attributes.source.principal: the verified mTLS peer's SAN
    source_ip: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the service answered: the status Envoy would give the client, the headers it would
    send upstream (allow) or to the client (deny), and the dynamic metadata (decision id,
    reason, principals, policy revision)."""

    allowed: bool
    status: int
    headers: Mapping[str, str]
    metadata: Mapping[str, object]
    body: str = ""  # a deny's body (the public error and the decision id)


def check_request(probe: Probe) -> CheckRequest:
    """The CheckRequest Envoy's HTTP filter sends for `probe` (pseudo-headers included)."""
    message = CheckRequest()
    attributes = message.attributes
    http = attributes.request.http
    http.method, http.path, http.host = probe.method, probe.path, probe.host
    http.protocol = "HTTP/1.1"
    http.headers.update({":method": probe.method, ":path": probe.path, ":authority": probe.host})
    http.headers.update({name.lower(): value for name, value in probe.headers.items()})
    attributes.source.address.socket_address.address = probe.source_ip
    if probe.principal:
        attributes.source.principal = probe.principal
    return message


def send_check(address: str, probe: Probe, timeout: float = 5.0) -> Answer:
    """Send `probe` to the service at `address` (`host:port` or `unix:/path`).
    Raises grpc.RpcError when the service cannot be reached or does not answer."""
    with grpc.insecure_channel(address) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        response = stub.Check(check_request(probe), timeout=timeout)
    return _answer(response)


def _answer(response: CheckResponse) -> Answer:
    metadata = MessageToDict(response.dynamic_metadata)
    if response.HasField("ok_response"):
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        return Answer(True, 200, headers, metadata)
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return Answer(False, int(denied.status.code) or 403, headers, metadata, denied.body)


def render_answer(answer: Answer) -> str:
    """`ALLOW 200 ...` or `DENY 403 ...`, then the metadata and headers, one per line."""
    meta = answer.metadata
    verdict = "ALLOW" if answer.allowed else "DENY"
    lines = [f"{verdict} {answer.status} reason={meta.get('reason', '?')}"]
    for key in ("decision_id", "principal", "request_principal", "api_key_principal"):
        if meta.get(key):
            lines.append(f"  {key}: {meta[key]}")
    if meta.get("shadow"):
        lines.append(f"  audit/dry-run: {json.dumps(meta['shadow'])}")
    lines.append(f"  policy revision: {meta.get('policy_revision', '?')}")
    where = "upstream gets" if answer.allowed else "client gets"
    for name, value in answer.headers.items():
        lines.append(f"  {where} {name}: {value}")
    if answer.body:
        lines.append(f"  client gets body: {answer.body}")
    return "\n".join(lines)
