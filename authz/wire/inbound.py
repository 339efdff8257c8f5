"""CheckRequest -> Request: the only code that reads Envoy's attributes.

What is read, from Envoy's `attribute_context.proto` (AttributeContext):
`request.http.{method,path,host,id,headers|header_map}`, `source.address`, `source.principal`,
`source.certificate`, `destination.address`, `context_extensions` and, when asked,
`metadata_context`.

Bad input raises only our own errors, each with a message saying what was wrong and a stable
reason code: `InvalidMethod`, `InvalidHost`, `InvalidPath` (from
`authz.request.paths.normalize_path`), `AttributeTooLarge` (400), `RequestTooLarge` (431:
headers, path) or `BadRequest` (400, a missing method or path). Every attribute is bounded by
`authz.config.Limits` before it is parsed or kept. This runs on every check: the common request
costs one pass over the headers and no copies beyond the resulting dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.struct_pb2 import ListValue, Struct, Value

from authz._proto.envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import AttributeTooLarge
from authz.model import Request
from authz.request.paths import normalize_path
from authz.wire.view import (
    bound_path,
    check_address,
    check_host,
    check_method,
    check_peer,
    headers_from_pairs,
    too_many,
)

# A UTF-8 character is at most 4 bytes: a string this short is under a byte limit unencoded.
_MAX_UTF8 = 4
# Struct numbers are doubles; an integral one up to 2**53 is an exact integer (a JWT's exp).
_EXACT_INT = 2**53


def to_request(
    message: CheckRequest, limits: Limits, *, jwt_metadata_namespace: str | None = None
) -> Request:
    """Read one CheckRequest into a normalized `Request`, or raise why it cannot be judged.

    Every attribute is checked against `limits` before it is parsed or kept, so nothing over a
    bound reaches a cache. `jwt_metadata_namespace` is the metadata namespace of Envoy's
    jwt_authn filter; claims are read from `metadata_context` only when it is given.
    """
    attributes = message.attributes
    http = attributes.request.http
    method = check_method(http.method, limits)
    raw_path = http.path
    bound_path(raw_path, limits)
    source = attributes.source
    principal, certificate = check_peer(source.principal, source.certificate, limits)
    source_ip = check_address(source.address.socket_address.address)
    headers = _headers(http, limits)
    host = check_host(http.host or headers.get(":authority") or headers.get("host") or "", limits)
    path, query = normalize_path(raw_path)
    jwt_metadata: Mapping[str, Mapping[str, Any]] = {}
    if jwt_metadata_namespace is not None:
        jwt_metadata = _jwt_metadata(attributes, jwt_metadata_namespace, limits)
    destination_address = attributes.destination.address.socket_address
    return Request(
        method=method,
        path=path,
        host=host,
        raw_path=raw_path,
        query=query,
        headers=headers,
        source_ip=source_ip or None,
        # `port_value` is in a oneof with `named_port`: 0 means "not a numeric port".
        destination_port=destination_address.port_value or None,
        peer_principal=principal,
        peer_certificate=certificate,
        jwt_metadata=jwt_metadata,
        # x-request-id, as on the HTTP door: `http.id` is Envoy's internal stream id.
        request_id=headers.get("x-request-id", ""),
        context=_context_extensions(attributes, limits),
    )


def _context_extensions(attributes: AttributeContext, limits: Limits) -> Mapping[str, str]:
    """`attributes.context_extensions` (ExtAuthzPerRoute.check_settings), within the limits."""
    extensions = attributes.context_extensions
    if not extensions:
        return {}
    if len(extensions) > limits.max_context_extensions:
        raise AttributeTooLarge(
            f"context_extensions has more entries than the limit of {limits.max_context_extensions}"
        )
    context = dict(extensions)
    size = sum(len(k) + len(v) for k, v in context.items())
    if size * _MAX_UTF8 > limits.max_context_bytes and (
        sum(len(k.encode()) + len(v.encode()) for k, v in context.items())
        > limits.max_context_bytes
    ):
        raise AttributeTooLarge(
            f"context_extensions is larger than the limit of {limits.max_context_bytes} bytes"
        )
    return context


def _headers(http: AttributeContext.HttpRequest, limits: Limits) -> dict[str, str]:
    """The request headers as one lower-case-keyed dict, within the limits.

    Envoy sends either the `headers` map (values joined with "," already) or, with the filter's
    `encode_raw_headers: true`, `header_map` with `raw_value` bytes and repeated names as separate
    entries, which are joined here as Envoy joins them for the map.
    """
    raw = http.HasField("header_map")
    if raw:
        entries = http.header_map.headers
        if len(entries) > limits.max_headers:
            raise too_many(limits)
        pairs: list[tuple[str, str]] = [
            (entry.key, _text(entry.raw_value) if entry.raw_value else entry.value)
            for entry in entries
        ]
    else:
        if len(http.headers) > limits.max_headers:
            raise too_many(limits)
        # Keys and lookups: the map's items() view iterates in Python, a third slower.
        headers = http.headers
        pairs = [(name, headers[name]) for name in headers]
    return headers_from_pairs(pairs, limits, ordered=raw)


def _text(raw: bytes) -> str:
    # Header values are bytes on the wire (RFC 9110 section 5.5). Invalid UTF-8 becomes U+FFFD
    # rather than lone surrogates, which would break whoever encodes the value again.
    return raw.decode("utf-8", "replace")


def _jwt_metadata(
    attributes: AttributeContext, namespace: str, limits: Limits
) -> Mapping[str, Mapping[str, Any]]:
    """The jwt_authn filter's payloads: `{payload_in_metadata name: claims}` as plain dicts,
    within `limits.max_metadata_bytes` (serialized, all payloads) and `max_metadata_depth`."""
    filter_metadata = attributes.metadata_context.filter_metadata
    if namespace not in filter_metadata:
        return {}
    payloads = filter_metadata[namespace]
    if payloads.ByteSize() > limits.max_metadata_bytes:
        raise AttributeTooLarge(
            f"the {namespace} metadata is larger than the limit of "
            f"{limits.max_metadata_bytes} bytes"
        )
    reader = _StructReader(limits.max_metadata_depth, namespace)
    result: dict[str, Mapping[str, Any]] = {}
    for name, value in payloads.fields.items():
        if value.WhichOneof("kind") == "struct_value":
            result[name] = reader.read_struct(value.struct_value, 1)
    return result


class _StructReader:
    """protobuf Struct -> plain values, refusing nesting deeper than `max_depth` (a payload
    itself is depth 1): claims are matched recursively and logged, so depth is bounded too."""

    def __init__(self, max_depth: int, namespace: str) -> None:
        self._max_depth = max_depth
        self._namespace = namespace

    def read_struct(self, struct: Struct, depth: int) -> dict[str, Any]:
        self._check(depth)
        return {key: self.read_value(value, depth) for key, value in struct.fields.items()}

    def read_list(self, values: ListValue, depth: int) -> list[Any]:
        self._check(depth)
        return [self.read_value(value, depth) for value in values.values]

    def read_value(self, value: Value, depth: int) -> Any:
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            return value.string_value
        if kind == "number_value":
            number = value.number_value
            if number.is_integer() and -_EXACT_INT <= number <= _EXACT_INT:
                return int(number)
            return number
        if kind == "bool_value":
            return value.bool_value
        if kind == "struct_value":
            return self.read_struct(value.struct_value, depth + 1)
        if kind == "list_value":
            return self.read_list(value.list_value, depth + 1)
        return None

    def _check(self, depth: int) -> None:
        if depth > self._max_depth:
            raise AttributeTooLarge(
                f"the {self._namespace} metadata nests deeper than the limit of {self._max_depth}"
            )
