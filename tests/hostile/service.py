"""A policy for the real service process, requests for it and an oracle for its answers.

Shared by the wire fuzzing, SIGTERM and soak tests (`tests/hostile/soak.py`); the process itself
is `tests.support.service.ServiceProcess`:

    policy = HostilePolicy(directory, issuer=..., jwks_uri=...)   # writes the YAML
    with ServiceProcess(directory) as service:                   # `python -m authz serve`
        raw = service.check_bytes(request.SerializeToString())   # bytes in, CheckResponse out
        expected = oracle(method, host, raw_path, token_state)   # what the answer must be

Everything listens on and talks to 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import textwrap
from dataclasses import dataclass
from typing import Any

from tests.hostile.reference import Invalid, reference_normalize

# The process helper itself lives in tests/support/service.py; re-exported here because
# tests/hostile/soak.py imports it from this module.
from tests.support.service import ServiceProcess as ServiceProcess

HOST = "shop.example.com"
AUDIENCE = "shop-api"


def policy_yaml(
    *,
    issuer: str,
    jwks_uri: str | None = None,
    jwks_file: str | None = None,
    public: str = "public",
) -> str:
    """The policy every process test uses. `public` names the path prefix anyone may GET; the
    soak flips it between two values to rewrite the policy under load."""
    source = f"jwks_uri: {jwks_uri}" if jwks_uri else f"jwks_file: {jwks_file}"
    return textwrap.dedent(f"""\
        hosts: [{HOST}]
        authentication:
          jwt:
            - issuer: {issuer}
              audiences: [{AUDIENCE}]
              {source}
        rules:
          - name: no-admin
            action: deny
            to: [{{paths: [/admin, "/admin/{{**}}"]}}]
          - name: public
            action: allow
            to: [{{methods: [GET], paths: ["/{public}/{{**}}"]}}]
          - name: users
            action: allow
            from: [{{issuers: ["{issuer}"]}}]
            to: [{{paths: ["/api/{{**}}"]}}]
        """)


# -- the oracle ---------------------------------------------------------------------------------

VALID, INVALID, NONE = "valid", "invalid", "none"


@dataclass(frozen=True, slots=True)
class Expected:
    allowed: bool
    status: int  # 200 for allow; 400, 401, 403 or 431 for a deny
    why: str


def oracle(
    method: str,
    host: str,
    raw_path: str,
    token: str,
    *,
    public: str = "public",
    max_path_bytes: int = 8 * 1024,
) -> Expected:
    """What the service must answer, from docs/policy.md and `policy_yaml` alone (not from authz).

    `token` is VALID (a token the trusted key signed, in force), INVALID (present, fails) or
    NONE.
    """
    # docs/policy.md: a method is an upper-case token; `get` is refused, not folded.
    if not method or not set(method) <= _METHOD_CHARS:
        return Expected(False, 400, "invalid_method")
    if len(raw_path.encode("utf-8", "surrogatepass")) > max_path_bytes:
        return Expected(False, 431, "request_too_large")
    name = _reference_host(host)
    if name is None:
        return Expected(False, 400, "invalid_host")
    try:
        path, _ = reference_normalize(raw_path)
    except Invalid:
        return Expected(False, 400, "invalid_path")
    if name != HOST:
        return Expected(False, 403, "no_policy_for_host")
    if token == INVALID:
        return Expected(False, 401, "jwt")
    if path == "/admin" or path.startswith("/admin/"):
        return Expected(False, 403, "no-admin")
    if method == "GET" and path.startswith(f"/{public}/"):
        return Expected(True, 200, "public")
    if path.startswith("/api/"):
        if token == VALID:
            return Expected(True, 200, "users")
        return Expected(False, 401, "no_matching_rule")
    return Expected(False, 403, "no_matching_rule")


_METHOD_CHARS = set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _reference_host(authority: str) -> str | None:
    """docs/policy.md's host, written out step by step: ASCII only, lower-cased, an all-digit port
    removed, labels of letters, digits, `_` and inner `-` (no trailing dot: the proxy in front
    removed the one a client may send), or an IPv6 literal in brackets; None for anything
    else. "" is no host."""
    if not authority:
        return ""
    if not authority.isascii():
        return None
    text = authority.lower()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    else:
        host, colon, port = text.partition(":")
        rest = colon + port
        labels = host.split(".")
        if not all(
            label and set(label) <= _LABEL_CHARS and "-" not in (label[0], label[-1])
            for label in labels
        ):
            return None
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and rest[1:].isascii()):
        return None
    return host


def token_state(headers: Any, valid: Any) -> str:
    """VALID, INVALID or NONE for a decoded header map, as docs/policy.md's default token location
    reads it: `authorization` (any case; repeated names joined with ","), `Bearer ` prefix
    (any case). A header without the prefix is no token at all; an empty one is invalid."""
    values = [v for k, v in headers.items() if k.lower() == "authorization"]
    if not values:
        return NONE
    auth = ",".join(values)
    if auth[:7].lower() != "bearer ":
        return NONE
    return VALID if auth[7:].strip() in valid else INVALID


# -- requests and responses --------------------------------------------------------------------


def protos() -> tuple[Any, Any]:
    """(external_auth_pb2, attribute_context_pb2): authz's own generated classes."""
    from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

    return external_auth_pb2, attribute_context_pb2


def check_request(
    method: str,
    host: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    source: str = "10.1.2.3",
    destination_port: int = 8080,
) -> Any:
    """A CheckRequest as Envoy sends it (pseudo-headers in the header map too)."""
    external_auth_pb2, _ = protos()
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method = method
    http.host = host
    http.path = path
    http.protocol = "HTTP/1.1"
    http.id = "fuzz"
    for name, value in {
        ":method": method,
        ":authority": host,
        ":path": path,
        **(headers or {}),
    }.items():
        http.headers[name] = value
    message.attributes.source.address.socket_address.address = source
    message.attributes.source.address.socket_address.port_value = 40000
    message.attributes.destination.address.socket_address.address = "10.0.0.1"
    message.attributes.destination.address.socket_address.port_value = destination_port
    return message


def parse_response(data: bytes) -> Any:
    external_auth_pb2, _ = protos()
    return external_auth_pb2.CheckResponse.FromString(data)


def response_status(response: Any) -> int:
    """The HTTP status the response stands for: 200 for OK, the denied status otherwise."""
    if response.status.code == 0:
        return 200
    code = response.denied_response.status.code
    return int(code) if code else 403


def metadata_reason(response: Any) -> str:
    """The `reason` field of the dynamic metadata, wherever it sits in the Struct."""

    def find(struct: Any) -> str:
        for key, value in struct.fields.items():
            kind = value.WhichOneof("kind")
            if key == "reason" and kind == "string_value":
                return str(value.string_value)
            if kind == "struct_value":
                found = find(value.struct_value)
                if found:
                    return found
        return ""

    return find(response.dynamic_metadata)
