"""CheckRequest -> Request: the only code that reads Envoy's attributes.

What is read, from Envoy's `attribute_context.proto` (AttributeContext):
`request.http.{method,path,host,id,headers|header_map}`, `source.address`, `source.principal`,
`source.certificate`, `destination.address` and, when asked, `metadata_context`.

Bad input raises only our own errors, each with a message saying what was wrong:
`BadRequest` (400), `InvalidPath` (400, from `authz.paths.normalize_path`) or
`RequestTooLarge` (431). This runs on every check: the common request costs one pass over the
headers and no copies beyond the resulting dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.struct_pb2 import ListValue, Struct, Value

from authz._proto.envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import BadRequest, RequestTooLarge
from authz.model import Request
from authz.paths import normalize_path

# RFC 9110 section 9.1: a method is a token (section 5.6.2). Anything else cannot be matched.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# RFC 9113 section 8.2.3: split cookie fields are joined with "; ", every other field with ",".
_COOKIE = "cookie"
# A UTF-8 character is at most 4 bytes: a string this short is under a byte limit unencoded.
_MAX_UTF8 = 4
# Struct numbers are doubles; an integral one up to 2**53 is an exact integer (a JWT's exp).
_EXACT_INT = 2**53


def to_request(
    message: CheckRequest, limits: Limits, *, jwt_metadata_namespace: str | None = None
) -> Request:
    """Read one CheckRequest into a normalized `Request`, or raise why it cannot be judged.

    `jwt_metadata_namespace` is the metadata namespace of Envoy's jwt_authn filter; claims are
    read from `metadata_context` only when it is given.
    """
    attributes = message.attributes
    http = attributes.request.http
    method = http.method
    check_method(method)
    raw_path = http.path
    path, query = check_path(raw_path, limits)
    headers = _headers(http, limits)
    source = attributes.source
    jwt_metadata: Mapping[str, Mapping[str, Any]] = {}
    if jwt_metadata_namespace is not None:
        jwt_metadata = _jwt_metadata(attributes, jwt_metadata_namespace)
    authority = http.host or headers.get(":authority") or headers.get("host") or ""
    source_address = source.address.socket_address
    destination_address = attributes.destination.address.socket_address
    return Request(
        method=method.upper(),
        path=path,
        host=host_of(authority),
        raw_path=raw_path,
        query=query,
        headers=headers,
        source_ip=source_address.address or None,
        # `port_value` is in a oneof with `named_port`: 0 means "not a numeric port".
        destination_port=destination_address.port_value or None,
        peer_principal=source.principal,
        peer_certificate=source.certificate,
        jwt_metadata=jwt_metadata,
        request_id=http.id or headers.get("x-request-id", ""),
    )


def check_method(method: str) -> None:
    """Raise BadRequest unless `method` is an HTTP method we can match. Shared by both doors."""
    if not method:
        raise BadRequest("the request has no method")
    if not _TOKEN_CHARS.issuperset(method):
        raise BadRequest("the request method is not an HTTP token")


def check_path(raw_path: str, limits: Limits) -> tuple[str, str]:
    """The normalized (path, query) of a request target, within the limits. Shared by both doors."""
    if not raw_path:
        raise BadRequest("the request has no path")
    if _too_long(raw_path, limits.max_path_bytes):
        raise RequestTooLarge(f"the path is longer than the limit of {limits.max_path_bytes} bytes")
    return normalize_path(raw_path)


def host_of(authority: str) -> str:
    """POLICY.md: the host is `:authority`, lower-cased, port removed (an IPv6 literal keeps its
    brackets: `[::1]:8080` is `[::1]`), and one trailing dot removed (`a.example.` names the same
    host as `a.example`). The same as the policy's own `normalize_host`, so applying both agrees.
    """
    host = authority.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end >= 0:
            host = host[: end + 1]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.endswith("."):
        host = host[:-1]
    return host


def _too_long(text: str, limit: int) -> bool:
    if len(text) * _MAX_UTF8 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


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
            raise _too_many(limits)
        pairs: list[tuple[str, str]] = [
            (entry.key, _text(entry.raw_value) if entry.raw_value else entry.value)
            for entry in entries
        ]
    else:
        if len(http.headers) > limits.max_headers:
            raise _too_many(limits)
        pairs = list(http.headers.items())
    return headers_from_pairs(pairs, limits, ordered=raw)


def headers_from_pairs(
    pairs: list[tuple[str, str]], limits: Limits, *, ordered: bool = True
) -> dict[str, str]:
    """Header fields as one lower-case-keyed dict, within the limits. Shared by both doors.

    `ordered`: the pairs are in wire order, so a repeated name is joined as Envoy joins it;
    otherwise (a protobuf map) a name repeated in another letter case is refused.
    """
    if len(pairs) > limits.max_headers:
        raise _too_many(limits)
    size = 0
    headers: dict[str, str] = {}
    for name, value in pairs:
        size += len(name) + len(value)
        key = name.lower()
        previous = headers.get(key)
        if previous is None:
            headers[key] = value
        elif ordered:
            # header_map keeps wire order, so the join is well defined.
            headers[key] = f"{previous}{'; ' if key == _COOKIE else ','}{value}"
        else:
            # Envoy lower-cases the map's keys and merges repeats itself, so two keys that
            # differ only in case are not from Envoy; and a protobuf map has no order, so
            # joining them would give different values to different readers. Refuse.
            raise BadRequest(f"the header {key!r} is sent twice, in different letter cases")
    # Characters first (cheap), bytes only when the characters come close to the limit.
    if size * _MAX_UTF8 > limits.max_header_bytes:
        size = sum(
            len(n.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
            for n, v in pairs
        )
        if size > limits.max_header_bytes:
            raise RequestTooLarge(
                f"the headers are larger than the limit of {limits.max_header_bytes} bytes"
            )
    return headers


def _too_many(limits: Limits) -> RequestTooLarge:
    return RequestTooLarge(f"the request has more headers than the limit of {limits.max_headers}")


def _text(raw: bytes) -> str:
    # Header values are bytes on the wire (RFC 9110 section 5.5). Invalid UTF-8 becomes U+FFFD
    # rather than lone surrogates, which would break whoever encodes the value again.
    return raw.decode("utf-8", "replace")


def _jwt_metadata(attributes: AttributeContext, namespace: str) -> Mapping[str, Mapping[str, Any]]:
    """The jwt_authn filter's payloads: `{payload_in_metadata name: claims}` as plain dicts."""
    filter_metadata = attributes.metadata_context.filter_metadata
    if namespace not in filter_metadata:
        return {}
    payloads = filter_metadata[namespace]
    result: dict[str, Mapping[str, Any]] = {}
    for name, value in payloads.fields.items():
        if value.WhichOneof("kind") == "struct_value":
            result[name] = _struct(value.struct_value)
    return result


def _struct(struct: Struct) -> dict[str, Any]:
    return {key: _value(value) for key, value in struct.fields.items()}


def _list(values: ListValue) -> list[Any]:
    return [_value(value) for value in values.values]


def _value(value: Value) -> Any:
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
        return _struct(value.struct_value)
    if kind == "list_value":
        return _list(value.list_value)
    return None
