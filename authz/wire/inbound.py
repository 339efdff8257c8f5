"""CheckRequest -> Request: the only code that reads Envoy's attributes.

Bad input never raises anything but our own errors: BadRequest (400), InvalidPath (400) or
RequestTooLarge (431), each with a message that says what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict

from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import BadRequest, RequestTooLarge
from authz.model import Request
from authz.paths import normalize_path

# RFC 9110 section 5.6.2: a method is a token. Anything else cannot be matched safely.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def to_request(
    message: CheckRequest, limits: Limits, *, jwt_metadata_namespace: str | None = None
) -> Request:
    """Read one CheckRequest into a normalized Request, or raise why it cannot be judged."""
    attributes = message.attributes
    http = attributes.request.http
    method = http.method
    if not method:
        raise BadRequest("the request has no method")
    if not _TOKEN_CHARS.issuperset(method):
        raise BadRequest("the method is not an HTTP token")
    raw_path = http.path
    if not raw_path:
        raise BadRequest("the request has no path")
    if len(raw_path) > limits.max_path_bytes:
        raise RequestTooLarge(f"the path is longer than {limits.max_path_bytes} bytes")

    headers = _headers(http, limits)
    path, query = normalize_path(raw_path)
    source = attributes.source
    destination = attributes.destination
    jwt_metadata: Mapping[str, Mapping[str, Any]] = {}
    if jwt_metadata_namespace is not None:
        jwt_metadata = _filter_metadata(attributes, jwt_metadata_namespace)

    return Request(
        method=method.upper(),
        path=path,
        host=host_of(http.host or headers.get(":authority", "") or headers.get("host", "")),
        raw_path=raw_path,
        query=query,
        headers=headers,
        source_ip=source.address.socket_address.address or None,
        destination_port=destination.address.socket_address.port_value or None,
        peer_principal=source.principal,
        peer_certificate=source.certificate,
        jwt_metadata=jwt_metadata,
        request_id=http.id or headers.get("x-request-id", ""),
    )


def host_of(authority: str) -> str:
    """POLICY.md: the host is `:authority`, lower-cased, port removed. `[v6]:port` keeps `[v6]`."""
    host = authority.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    if colon != -1 and host[colon + 1 :].isdigit():
        host = host[:colon]
    return host


def _headers(http: Any, limits: Limits) -> dict[str, str]:
    # Envoy sends either the `headers` map or, with encode_raw_headers, `header_map` (bytes
    # values, repeated names as separate entries, which we join with "," as Envoy's map does).
    entries: list[tuple[str, str]]
    if http.HasField("header_map"):
        entries = [
            (h.key, h.raw_value.decode("utf-8", "surrogateescape") if h.raw_value else h.value)
            for h in http.header_map.headers
        ]
    else:
        entries = list(http.headers.items())
    if len(entries) > limits.max_headers:
        raise RequestTooLarge(f"the request has more than {limits.max_headers} headers")
    size = 0
    headers: dict[str, str] = {}
    for name, value in entries:
        size += len(name) + len(value)
        if size > limits.max_header_bytes:
            raise RequestTooLarge(f"the headers are larger than {limits.max_header_bytes} bytes")
        key = name.lower()
        previous = headers.get(key)
        headers[key] = value if previous is None else f"{previous},{value}"
    return headers


def _filter_metadata(attributes: Any, namespace: str) -> Mapping[str, Mapping[str, Any]]:
    filter_metadata = attributes.metadata_context.filter_metadata
    if namespace not in filter_metadata:
        return {}
    payloads = MessageToDict(filter_metadata[namespace])
    return {k: v for k, v in payloads.items() if isinstance(v, dict)}
