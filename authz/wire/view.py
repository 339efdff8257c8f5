"""Filling the request view: the checks and bounded reads every door applies to what its
transport carried (the gRPC door in `authz.wire.inbound`, the HTTP door in `authz.wire.http`),
so a request is the same `Request` whichever door it came through.

Every value is bounded by `authz.config.Limits` before it is parsed or kept; bad input raises
only our own errors (`InvalidMethod`, `InvalidHost`, `AttributeTooLarge`, `RequestTooLarge`,
`BadRequest`), each with a message saying what was wrong.
"""

from __future__ import annotations

from itertools import chain

from authz.config import Limits
from authz.errors import (
    AttributeTooLarge,
    BadRequest,
    InvalidHost,
    InvalidMethod,
    RequestTooLarge,
)
from authz.request.hosts import normalize_host
from authz.request.methods import check_method as check_method_name

# An IP address, IPv6 with an IPv4 tail and a zone included, is far shorter: longer is not one.
_MAX_ADDRESS_BYTES = 128
# RFC 9113 section 8.2.3: split cookie fields are joined with "; ", every other field with ",".
_COOKIE = "cookie"
# A UTF-8 character is at most 4 bytes: a string this short is under a byte limit unencoded.
_MAX_UTF8 = 4


def check_method(method: str, limits: Limits) -> str:
    """docs/policy.md: the method as sent, an upper-case token. `get` is refused, never upper-cased:
    a GET rule would allow it while the upstream may treat it as another method (or 405)."""
    if not method:
        raise BadRequest("the request has no method (attributes.request.http.method)")
    _bound(method, limits.max_method_bytes, "method")
    try:
        check_method_name(method)  # the policy's own rule for the methods it names
    except ValueError as error:
        raise InvalidMethod(f"the request method {error}") from None
    return method


def bound_path(raw_path: str, limits: Limits) -> None:
    """A request target is present and within `limits.max_path_bytes` (431 over it)."""
    if not raw_path:
        raise BadRequest("the request has no path (attributes.request.http.path)")
    if too_long(raw_path, limits.max_path_bytes):
        raise RequestTooLarge(f"the path is longer than the limit of {limits.max_path_bytes} bytes")


def check_host(authority: str, limits: Limits) -> str:
    """The canonical host of `authority` (`normalize_host`), within `limits.max_host_bytes`."""
    _bound(authority, limits.max_host_bytes, "host")
    host = normalize_host(authority)
    if host is None:
        raise InvalidHost(f"the host {authority[:64]!r} is not a host name, IP or [IPv6] literal")
    return host


def check_peer(principal: str, certificate: str, limits: Limits) -> tuple[str, str]:
    """The peer's principal and certificate, each within its limit."""
    _bound(principal, limits.max_principal_bytes, "source.principal")
    _bound(certificate, limits.max_certificate_bytes, "source.certificate")
    return principal, certificate


def check_address(address: str) -> str:
    _bound(address, _MAX_ADDRESS_BYTES, "source.address")
    return address


def _bound(text: str, limit: int, name: str) -> None:
    if too_long(text, limit):
        raise AttributeTooLarge(f"{name} is longer than the limit of {limit} bytes")


def value_too_large(name: str, limits: Limits) -> RequestTooLarge:
    return RequestTooLarge(
        f"the value of {name} is longer than the limit of {limits.max_header_value_bytes} bytes"
    )


def too_long(text: str, limit: int) -> bool:
    """Over `limit` UTF-8 bytes; encodes only a text near the limit (never a huge one)."""
    if len(text) * _MAX_UTF8 <= limit:
        return False
    if len(text) > limit:  # every character is at least one byte
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit


def headers_from_pairs(
    pairs: list[tuple[str, str]], limits: Limits, *, ordered: bool = True
) -> dict[str, str]:
    """Header fields as one lower-case-keyed dict, within the limits (count, each value after
    joining, all together).

    `ordered`: the pairs are in wire order, so a repeated name is joined as Envoy joins it;
    otherwise (a protobuf map) a name repeated in another letter case is refused.
    """
    if len(pairs) > limits.max_headers:
        raise too_many(limits)
    # The common request, in one comprehension: no name repeated, every value short enough to
    # be within the value limit unencoded. Anything else takes the field-by-field reading,
    # which joins or refuses repeats and says which value is too long, in wire order.
    headers = {name.lower(): value for name, value in pairs}
    if len(headers) != len(pairs) or (
        headers and max(map(len, headers.values())) > limits.max_header_value_bytes // _MAX_UTF8
    ):
        headers = _joined(pairs, limits, ordered)
    # Characters first (cheap), bytes only when the characters come close to the limit.
    if sum(map(len, chain.from_iterable(pairs))) * _MAX_UTF8 > limits.max_header_bytes:
        size = sum(
            len(n.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
            for n, v in pairs
        )
        if size > limits.max_header_bytes:
            raise RequestTooLarge(
                f"the headers are larger than the limit of {limits.max_header_bytes} bytes"
            )
    return headers


def _joined(pairs: list[tuple[str, str]], limits: Limits, ordered: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        previous = headers.get(key)
        if previous is None or ordered:
            if previous is not None:
                # wire order (header_map, HTTP) makes the join well defined.
                value = f"{previous}{'; ' if key == _COOKIE else ','}{value}"
            if too_long(value, limits.max_header_value_bytes):
                raise value_too_large(f"the header {key[:64]!r}", limits)
            headers[key] = value
        else:
            # Envoy lower-cases the map's keys and merges repeats itself, so two keys that
            # differ only in case are not from Envoy; and a protobuf map has no order, so
            # joining them would give different values to different readers. Refuse.
            raise BadRequest(f"the header {key!r} is sent twice, in different letter cases")
    return headers


def too_many(limits: Limits) -> RequestTooLarge:
    return RequestTooLarge(f"the request has more headers than the limit of {limits.max_headers}")
