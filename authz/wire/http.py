"""The HTTP front door: an HTTP authorization request -> Request, and a Verdict -> HTTP answer.

The same `Request` as the gRPC door builds (method, path and header rules are shared with
`authz.wire.inbound`), so nothing above `wire/` knows which door a request used.

Two modes, chosen per listener by the operator (a client never chooses what is judged):

- `envoy`: Envoy's ext_authz `http_service`. Envoy sends the original method, `path_prefix` +
  the original path, the original Host, and only the headers its `allowed_headers` lets through
  (plus Host, Method, Path, Content-Length: 0 and Authorization). The HTTP server we run on
  (granian, RSGI) hands us the path percent-*decoded*, which would turn `/a%2Fb` into `/a/b` and
  hide exactly the ambiguity the gRPC door refuses with 400. So the raw target comes from
  `x-authz-original-path`, which the generated Envoy config sets to `%REQ(:PATH)%` with
  `authorization_request.headers_to_add` (that overrides any client value of the same name); a
  request without it is refused, and one whose decoded path disagrees with it is refused too.
  `X-Original-URI`, `X-Forwarded-Uri` and friends mean nothing here.
- `forward-auth`: nginx `auth_request` (`X-Original-Method`, `X-Original-URI`) and Traefik
  `forwardAuth` (`X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`). The proxy must set these
  itself (overwriting client values); when both spellings are present they must agree.

Workload identity: only on a listener with `trust_xfcc`, from the last element of
`x-forwarded-client-cert` (Envoy with `forward_client_cert_details: SANITIZE_SET` drops the
client's value and sets its own); elsewhere that header is dropped before anything reads it.
The client address: in `envoy` mode from `x-authz-client-address`, which the generated config
sets to Envoy's own view of the peer (never `x-forwarded-for`, which a client can write and which
behind that config is not the client's); in `forward-auth` mode the last `x-forwarded-for` entry
(the one the proxy appended). Both modes fill the pseudo-headers `:method`, `:path`,
`:authority` and `:scheme` (`x-authz-original-scheme` from Envoy, `x-forwarded-proto` from a
forward-auth proxy) and drop `host`, as the gRPC door's headers have them.

The answer: an allow is 200 with the headers for the upstream (Envoy copies those its
`allowed_upstream_headers` matches) and `x-envoy-auth-headers-to-remove` naming the headers to
strip; a deny is the gRPC door's status, JSON body and RFC 6750 challenge.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, replace

from authz.config import Limits
from authz.errors import BadRequest
from authz.identity.peer import xfcc_peer
from authz.model import Decision, Request, Verdict
from authz.reasons import Reason
from authz.request.paths import normalize_path
from authz.wire.deny import deny_body, deny_status
from authz.wire.view import (
    bound_path,
    check_address,
    check_host,
    check_method,
    check_peer,
    headers_from_pairs,
)

# Set by Envoy (headers_to_add: "%REQ(:PATH)%"): the original :path, undecoded.
ENVOY_PATH_HEADER = "x-authz-original-path"
# Set by Envoy (headers_to_add: "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%"): the client's
# address, as the gRPC door reads it from `source.address`.
ENVOY_ADDRESS_HEADER = "x-authz-client-address"
# Set by Envoy (headers_to_add: "%REQ(content-length)%"): the request's own content-length.
ENVOY_CONTENT_LENGTH_HEADER = "x-authz-original-content-length"
# Set by Envoy (headers_to_add: "%REQ(:SCHEME)%"): the request's `:scheme` pseudo-header.
ENVOY_SCHEME_HEADER = "x-authz-original-scheme"
# Added by Envoy to its authorization request itself (seen through a real Envoy 1.40), never part
# of the request the gRPC door judges: dropped. (`x-envoy-internal` on a request from an internal
# address is then invisible at the HTTP door: docs/http-mode.md says so.)
ENVOY_CALL_HEADERS = ("x-envoy-expected-rq-timeout-ms", "x-envoy-internal")
# Envoy's ext_authz HTTP client removes the headers named here (comma-separated) upstream.
ENVOY_HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
XFCC = "x-forwarded-client-cert"
# An allow this door cannot carry out (a token to strip from the query string: Envoy's HTTP
# protocol, nginx and Traefik have no way to say it) is denied, never half-done.
UNSUPPORTED_IN_HTTP_MODE = Reason.QUERY_TOKEN_NOT_REMOVABLE
# forward-auth: set by the proxy (over any client copy), the upstream request headers it replaces
# with this answer's copies, comma-separated: nginx (auth_request_set + proxy_set_header per name,
# an empty value is not sent) and Traefik (authResponseHeaders: deleted, then copied from the
# answer when it has them). Those proxies ignore x-envoy-auth-headers-to-remove, so this is the
# only way a forward-auth answer can remove a header. deploy/nginx and deploy/traefik set it.
PROXY_REPLACES = "x-authz-proxy-replaces"
# forward-auth deny: the decision id as a header too, for nginx, which drops the answer's body
# and builds its own from this (deploy/nginx/authz.conf).
DENY_DECISION_ID = "x-authz-decision-id"

_NGINX_METHOD, _NGINX_URI = "x-original-method", "x-original-uri"
_TRAEFIK_METHOD, _TRAEFIK_URI = "x-forwarded-method", "x-forwarded-uri"
_FORWARDED_HOST = "x-forwarded-host"
_JSON = ("content-type", "application/json")


class HttpMode(enum.StrEnum):
    ENVOY = "envoy"
    FORWARD_AUTH = "forward-auth"


@dataclass(frozen=True, slots=True)
class HttpListener:
    """How one HTTP listener reads its requests: the operator's choice for that address."""

    mode: HttpMode = HttpMode.ENVOY
    # Envoy mode: `http_service.path_prefix`; the decoded path must start with it.
    path_prefix: str = ""
    # The workload principal from x-forwarded-client-cert (only behind Envoy's SANITIZE_SET).
    trust_xfcc: bool = False


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: str = ""


def to_request(
    listener: HttpListener,
    limits: Limits,
    *,
    method: str,
    path: str,
    query: str,
    pairs: Sequence[tuple[str, str]],
) -> Request:
    """Read one HTTP authorization request (as the server parsed it: `path` percent-decoded,
    `query` raw, header `pairs` in wire order) into a `Request`, or raise why it cannot be
    judged (`BadRequest`, `InvalidPath`, `RequestTooLarge`, `WorkloadRejected`)."""
    headers = headers_from_pairs(list(pairs), limits)
    source_ip: str | None
    if listener.mode is HttpMode.ENVOY:
        original_method, target = method, _envoy_target(listener, headers, path, query)
        authority = headers.get("host", "")
        # Set by the generated config (authz envoy-config --http) from what Envoy itself knows,
        # overriding any client value: the peer address Envoy's gRPC client sends as
        # `source.address`, and the request's own content-length (Envoy's authorization
        # request has its own, 0). x-forwarded-for is not the client's address here.
        source_ip = check_address(headers.pop(ENVOY_ADDRESS_HEADER, "").strip()) or None
        _restore(headers, "content-length", headers.pop(ENVOY_CONTENT_LENGTH_HEADER, None))
        _restore(headers, ":scheme", headers.pop(ENVOY_SCHEME_HEADER, None))
        # Envoy's own, on its authorization request (the gRPC door's headers do not have them).
        for name in ENVOY_CALL_HEADERS:
            headers.pop(name, None)
    else:
        original_method = _one_of(headers, _TRAEFIK_METHOD, _NGINX_METHOD, "method")
        target = _one_of(headers, _TRAEFIK_URI, _NGINX_URI, "URI")
        authority = headers.get(_FORWARDED_HOST) or headers.get("host", "")
        forwarded_for = headers.get("x-forwarded-for", "")
        source_ip = check_address(forwarded_for.rsplit(",", 1)[-1].strip()) or None
        _restore(headers, ":scheme", headers.get("x-forwarded-proto"))
    checked_method = check_method(original_method, limits)
    bound_path(target, limits)
    host = check_host(authority, limits)
    normalized, raw_query = normalize_path(target)
    peer_principal = peer_certificate = ""
    xfcc = headers.pop(XFCC, "") if not listener.trust_xfcc else headers.get(XFCC, "")
    if listener.trust_xfcc and xfcc:
        peer_principal, peer_certificate = check_peer(*xfcc_peer(xfcc), limits)
    # The gRPC door's headers are Envoy's: the pseudo-headers, and no `host` (HTTP/1's Host is
    # `:authority` there). The same here, so a condition on either reads the same at both doors.
    headers.pop("host", None)
    headers[":method"], headers[":path"], headers[":authority"] = original_method, target, authority
    return Request(
        method=checked_method,
        path=normalized,
        host=host,
        raw_path=target,
        query=raw_query,
        headers=headers,
        source_ip=source_ip,
        peer_principal=peer_principal,
        peer_certificate=peer_certificate,
        request_id=headers.get("x-request-id", ""),
    )


def _restore(headers: dict[str, str], name: str, value: str | None) -> None:
    """`name` as the original request had it: `value` (None or empty, or Envoy's `-` for a
    header the request did not have: absent)."""
    if value is None or value in ("", "-"):
        headers.pop(name, None)
    else:
        headers[name] = value


def _envoy_target(listener: HttpListener, headers: dict[str, str], path: str, query: str) -> str:
    # Popped: it is ours, not the client's, and the gRPC door's Request has no such header.
    target = headers.pop(ENVOY_PATH_HEADER, "")
    if not target:
        raise BadRequest(
            f"no {ENVOY_PATH_HEADER} header: the Envoy ext_authz http_service must set it to "
            "%REQ(:PATH)% in authorization_request.headers_to_add (see authz envoy-config --http)"
        )
    if not path.startswith(listener.path_prefix):
        raise BadRequest(f"the path does not start with the path prefix {listener.path_prefix!r}")
    # The server's decoded path must be the decoding of what Envoy says it sent: a mismatch is
    # a misconfigured or bypassed proxy, and judging either path would be a guess.
    sent_path, _, sent_query = target.partition("?")
    if urllib.parse.unquote(sent_path) != path[len(listener.path_prefix) :] or (
        sent_query != query
    ):
        raise BadRequest(f"{ENVOY_PATH_HEADER} does not match the request path")
    return target


def _one_of(headers: dict[str, str], first: str, second: str, what: str) -> str:
    a, b = headers.get(first), headers.get(second)
    if a is not None and b is not None and a != b:
        raise BadRequest(f"{first} and {second} disagree: the original {what} is ambiguous")
    value = a if a is not None else b
    if not value:
        raise BadRequest(f"forward-auth: the proxy sent neither {first} nor {second}")
    return value


def expressible(
    verdict: Verdict, listener: HttpListener | None = None, request: Request | None = None
) -> Verdict:
    """`verdict`, or a deny when it is an allow this door cannot carry out: a query-string
    token to strip (any mode), or, behind forward-auth, a header to set or remove that the
    proxy does not replace (`_forward_auth_edits`)."""
    if not verdict.decision.allowed:
        return verdict
    if verdict.query_parameters_to_remove:
        return _refused(verdict, UNSUPPORTED_IN_HTTP_MODE)
    if listener is not None and listener.mode is HttpMode.FORWARD_AUTH and request is not None:
        return _forward_auth_edits(verdict, request)
    return verdict


def _forward_auth_edits(verdict: Verdict, request: Request) -> Verdict:
    """The allow as nginx and Traefik can carry it out: they replace the upstream copies of the
    headers the proxy names in PROXY_REPLACES with the answer's, and touch nothing else. So the
    answer carries the final value of every such header (set by the verdict, else the client's
    own, unchanged; absent: removed), and an allow that must set or remove any other header
    (a client's x-user-id, an API key, a `forward: false` token) is denied: never half-done."""
    replaced = {
        name.strip().lower()
        for name in request.headers.get(PROXY_REPLACES, "").split(",")
        if name.strip()
    }
    touched = {name.lower() for name, _ in verdict.headers_to_set}
    touched.update(name.lower() for name in verdict.headers_to_remove)
    if not touched <= replaced:
        return _refused(verdict, Reason.HEADER_NOT_REPLACED)
    kept = tuple(
        (name, request.headers[name])
        for name in sorted(replaced - touched)
        if name in request.headers and name != PROXY_REPLACES
    )
    return replace(verdict, headers_to_set=verdict.headers_to_set + kept)


def _refused(verdict: Verdict, reason: Reason) -> Verdict:
    return replace(
        verdict,
        decision=Decision(allowed=False, status=reason.status, reason=reason),
        headers_to_set=(),
        headers_to_remove=(),
        query_parameters_to_remove=(),
    )


def to_answer(verdict: Verdict, listener: HttpListener | None = None) -> HttpAnswer:
    """The HTTP answer for `verdict` (pass it through `expressible` first)."""
    decision = verdict.decision
    if decision.allowed:
        headers = list(verdict.headers_to_set)
        if verdict.headers_to_remove:
            headers.append((ENVOY_HEADERS_TO_REMOVE, ",".join(verdict.headers_to_remove)))
        return HttpAnswer(200, headers)
    status = deny_status(decision.status)
    headers = [_JSON]
    if decision.challenge:
        headers.append(("www-authenticate", decision.challenge))
    headers.extend(verdict.response_headers)  # a 429's Retry-After and RateLimit headers
    if listener is not None and listener.mode is HttpMode.FORWARD_AUTH:
        headers.append((DENY_DECISION_ID, verdict.decision_id))
    return HttpAnswer(status, headers, deny_body(status, verdict.decision_id))


def internal_error_answer(decision_id: str) -> HttpAnswer:
    """The deny sent when anything unexpected happened inside a check (built from constants)."""
    status = deny_status(0)
    return HttpAnswer(status, [_JSON], deny_body(status, decision_id))
