"""A request given as plain values (`authz test`, `authz explain`, `authz replay`) read as the
gRPC door reads Envoy's: the values become the CheckRequest Envoy would send and go through
`authz.wire.inbound.to_request`, so a tool and the service cannot read one request two ways."""

from __future__ import annotations

from collections.abc import Mapping

from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import BadRequest
from authz.model import Request
from authz.wire.inbound import to_request

__all__ = ["given_request"]


def given_request(
    *,
    method: str,
    path: str,
    host: str,
    headers: Mapping[str, str],
    source_ip: str | None = None,
    port: int | None = None,
    principal: str = "",
    context: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> Request:
    """The `Request` the service would build for these values (raises what it would raise:
    InvalidPath, InvalidHost, InvalidMethod, RequestTooLarge, ...)."""
    message = CheckRequest()
    try:
        _fill(message, method, path, host, headers, source_ip, port, principal, context)
    except (TypeError, ValueError) as error:
        # A value no Envoy could send (a port out of range, a header that is not text): the
        # service never sees such a request; a tool refuses it as the wire refuses bad input.
        raise BadRequest(f"the request cannot be built as Envoy would send it: {error}") from error
    return to_request(message, limits or Limits())


def _fill(
    message: CheckRequest,
    method: str,
    path: str,
    host: str,
    headers: Mapping[str, str],
    source_ip: str | None,
    port: int | None,
    principal: str,
    context: Mapping[str, str] | None,
) -> None:
    attributes = message.attributes
    http = attributes.request.http
    http.method = method
    http.path = path
    http.host = host
    for name, value in headers.items():
        http.headers[name.lower()] = value
    if source_ip:
        attributes.source.address.socket_address.address = source_ip
    if port:
        attributes.destination.address.socket_address.port_value = port
    attributes.source.principal = principal
    for key, value in (context or {}).items():
        attributes.context_extensions[key] = value
