"""The HTTP door both ways: HTTP authorization request -> Request, Verdict -> HTTP answer."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from authz.config import Limits
from authz.errors import (
    AttributeTooLarge,
    BadRequest,
    InvalidHost,
    InvalidMethod,
    InvalidPath,
    RequestTooLarge,
    WorkloadRejected,
)
from authz.model import Decision, Verdict
from authz.reasons import Reason
from authz.wire.http import (
    DENY_DECISION_ID,
    ENVOY_ADDRESS_HEADER,
    ENVOY_CONTENT_LENGTH_HEADER,
    ENVOY_HEADERS_TO_REMOVE,
    ENVOY_PATH_HEADER,
    PROXY_REPLACES,
    UNSUPPORTED_IN_HTTP_MODE,
    HttpListener,
    HttpMode,
    expressible,
    internal_error_answer,
    to_answer,
    to_request,
)
from authz.wire.inbound import to_request as grpc_to_request
from tests.unit.wire.test_inbound import check_request

ENVOY = HttpListener()
ENVOY_XFCC = HttpListener(trust_xfcc=True)
FORWARD = HttpListener(mode=HttpMode.FORWARD_AUTH)
LIMITS = Limits()
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
XFCC = f'Hash=ab;Cert="-----BEGIN%20CERTIFICATE-----%0AMII%0A";Subject="CN=x";URI={FRONTEND}'


def envoy(
    target: str,
    *extra: tuple[str, str],
    listener: HttpListener = ENVOY,
    decoded: str | None = None,
    method: str = "GET",
) -> object:
    """What granian hands us for Envoy's authorization request for `target`."""
    path, _, query = target.partition("?")
    from urllib.parse import unquote

    return to_request(
        listener,
        LIMITS,
        method=method,
        path=decoded if decoded is not None else listener.path_prefix + unquote(path),
        query=query,
        pairs=[("host", "Shop.Example.com:443"), (ENVOY_PATH_HEADER, target), *extra],
    )


def forward(pairs: Sequence[tuple[str, str]], method: str = "GET", path: str = "/auth") -> object:
    return to_request(FORWARD, LIMITS, method=method, path=path, query="", pairs=pairs)


def test_envoy_mode_reads_the_undecoded_target_from_envoy() -> None:
    request = envoy(
        "/api/./orders/%7E42?x=%20y",
        ("x-request-id", "r1"),
        ("x-forwarded-for", "1.2.3.4, 10.0.0.7"),
        (ENVOY_ADDRESS_HEADER, "10.0.0.9"),
    )
    assert request.method == "GET"
    assert request.path == "/api/orders/~42"
    assert request.raw_path == "/api/./orders/%7E42?x=%20y"
    assert request.query == "x=%20y"
    assert request.host == "shop.example.com"
    assert request.request_id == "r1"
    # Envoy's own view of the peer (the gRPC door's source.address), never x-forwarded-for:
    # behind the generated config that is Envoy's address, and a client can write it.
    assert request.source_ip == "10.0.0.9"
    assert ENVOY_PATH_HEADER not in request.headers  # ours, not the client's
    assert ENVOY_ADDRESS_HEADER not in request.headers


def test_envoy_mode_refuses_the_same_ambiguous_paths_as_grpc() -> None:
    with pytest.raises(InvalidPath):
        envoy("/api/a%2Fb")
    with pytest.raises(InvalidPath):
        envoy("/api/..;/admin")
    with pytest.raises(RequestTooLarge):
        envoy("/" + "a" * LIMITS.max_path_bytes)


def test_envoy_mode_without_the_path_header_is_refused() -> None:
    with pytest.raises(BadRequest, match=ENVOY_PATH_HEADER):
        to_request(ENVOY, LIMITS, method="GET", path="/api", query="", pairs=[("host", "a")])


def test_envoy_mode_refuses_a_path_header_that_is_not_the_request_path() -> None:
    # A proxy that lets a client's header through, or a bypassed proxy: judge neither path.
    with pytest.raises(BadRequest, match="does not match"):
        envoy("/public", decoded="/admin")
    with pytest.raises(BadRequest, match="path prefix"):
        envoy("/api", listener=HttpListener(path_prefix="/check"), decoded="/api")
    prefixed = envoy("/api", listener=HttpListener(path_prefix="/check"))
    assert prefixed.path == "/api"


def test_envoy_mode_ignores_forward_auth_headers() -> None:
    request = envoy(
        "/admin",
        ("x-original-uri", "/public"),
        ("x-forwarded-uri", "/public"),
        ("x-original-method", "GET"),
        ("x-forwarded-host", "public.example.com"),
        method="DELETE",
    )
    assert (request.method, request.path, request.host) == ("DELETE", "/admin", "shop.example.com")


def test_envoy_mode_bad_method_is_refused() -> None:
    with pytest.raises(BadRequest):
        envoy("/api", method="GE T")


def test_xfcc_is_the_peer_only_on_a_trusting_listener() -> None:
    trusted = envoy("/api", ("x-forwarded-client-cert", XFCC), listener=ENVOY_XFCC)
    assert trusted.peer_principal == FRONTEND
    assert trusted.peer_certificate.startswith("-----BEGIN%20CERTIFICATE")
    untrusted = envoy("/api", ("x-forwarded-client-cert", XFCC))
    assert untrusted.peer_principal == ""
    # Dropped, so no later reader (a global trust_xfcc) can take it for the truth.
    assert "x-forwarded-client-cert" not in untrusted.headers
    with pytest.raises(WorkloadRejected):
        envoy("/api", ("x-forwarded-client-cert", 'URI="unterminated'), listener=ENVOY_XFCC)


def test_forward_auth_nginx_and_traefik_conventions() -> None:
    nginx = forward(
        [
            ("host", "shop.example.com"),
            ("x-original-method", "POST"),
            ("x-original-uri", "/api/x?a=1"),
        ]
    )
    assert (nginx.method, nginx.path, nginx.query, nginx.host) == (
        "POST",
        "/api/x",
        "a=1",
        "shop.example.com",
    )
    traefik = forward(
        [
            ("host", "authz:8080"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/api/%2e%2e/admin"),
            ("x-forwarded-host", "Shop.Example.com"),
            ("x-forwarded-proto", "https"),
        ]
    )
    assert (traefik.method, traefik.path, traefik.host) == ("DELETE", "/admin", "shop.example.com")


def test_forward_auth_is_refused_when_ambiguous_or_missing() -> None:
    with pytest.raises(BadRequest, match="disagree"):
        forward(
            [("host", "a"), ("x-forwarded-method", "GET"), ("x-original-method", "GET"),
             ("x-original-uri", "/public"), ("x-forwarded-uri", "/admin")]
        )  # fmt: skip
    with pytest.raises(BadRequest, match="neither"):
        forward([("host", "a"), ("x-original-uri", "/api")])  # the server's own method is no clue
    with pytest.raises(InvalidPath):
        forward([("host", "a"), ("x-original-method", "GET"), ("x-original-uri", "/a%2Fb")])


def test_header_limits_are_the_grpc_ones() -> None:
    many = [(f"x-h{i}", "v") for i in range(LIMITS.max_headers + 1)]
    with pytest.raises(RequestTooLarge):
        envoy("/api", *many)


ALLOW = Verdict(
    decision=Decision(allowed=True, status=200, reason="orders"),
    decision_id="d1",
    headers_to_set=(("x-authz-decision-id", "d1"), ("x-authz-principal", FRONTEND)),
    headers_to_remove=("x-authz-request-principal", "x-user-id"),
)


def test_allow_is_200_with_upstream_headers_and_headers_to_remove() -> None:
    answer = to_answer(ALLOW)
    assert answer.status == 200 and answer.body == ""
    assert answer.headers == [
        ("x-authz-decision-id", "d1"),
        ("x-authz-principal", FRONTEND),
        (ENVOY_HEADERS_TO_REMOVE, "x-authz-request-principal,x-user-id"),
    ]


def test_deny_carries_status_json_body_and_challenge() -> None:
    denied = Verdict(
        decision=Decision(allowed=False, status=401, reason="jwt_missing", challenge="Bearer"),
        decision_id="d2",
    )
    answer = to_answer(denied)
    assert answer.status == 401
    assert ("www-authenticate", "Bearer") in answer.headers
    assert json.loads(answer.body) == {"error": "unauthorized", "decision_id": "d2"}
    odd = Verdict(decision=Decision(allowed=False, status=200, reason="x"), decision_id="d3")
    assert to_answer(odd).status == 403  # a deny always looks like one
    assert internal_error_answer("d4").status == 403


def test_an_allow_that_needs_a_query_token_removed_is_denied() -> None:
    verdict = expressible(
        Verdict(
            decision=Decision(allowed=True, status=200, reason="r"),
            decision_id="d5",
            query_parameters_to_remove=("access_token",),
        )
    )
    assert not verdict.decision.allowed
    assert verdict.decision.reason == UNSUPPORTED_IN_HTTP_MODE
    assert to_answer(verdict).status == 403
    assert expressible(ALLOW) is ALLOW


def nginx_request(*extra: tuple[str, str], replaces: str | None = None) -> object:
    listed = "x-authz-decision-id,x-authz-principal,x-authz-request-principal,x-user-id,cookie"
    pairs = [("host", "authz"), ("x-original-method", "GET"), ("x-original-uri", "/api")]
    pairs.append((PROXY_REPLACES, listed if replaces is None else replaces))
    return forward([*pairs, *extra])


def test_forward_auth_allow_carries_every_replaced_headers_final_value() -> None:
    """nginx and Traefik replace the listed headers with the answer's copies and ignore
    x-envoy-auth-headers-to-remove: set ones are sent, removed ones are absent, untouched ones
    are the client's own."""
    request = nginx_request(("cookie", "a=1"), ("x-user-id", "admin"), ("x-other", "kept"))
    verdict = expressible(ALLOW, FORWARD, request)  # type: ignore[arg-type]
    assert verdict.decision.allowed
    answer = dict(to_answer(verdict, FORWARD).headers)
    assert answer["x-authz-principal"] == FRONTEND and answer["x-authz-decision-id"] == "d1"
    assert answer["cookie"] == "a=1"  # replaced, untouched: echoed so the proxy keeps it
    assert "x-user-id" not in answer and "x-authz-request-principal" not in answer  # removed
    assert "x-other" not in answer  # not replaced by the proxy: never echoed
    assert expressible(ALLOW, ENVOY, request) is ALLOW  # Envoy reads the remove list itself


def test_forward_auth_allow_that_touches_an_unreplaced_header_is_denied() -> None:
    """A header the proxy does not replace cannot be set or removed: a client's own x-user-id
    or API key would reach the upstream. Denied, never half-done; no list at all: the same."""
    for replaces in ("x-authz-decision-id,x-authz-principal,x-authz-request-principal", ""):
        request = nginx_request(replaces=replaces)
        verdict = expressible(ALLOW, FORWARD, request)  # type: ignore[arg-type]
        assert not verdict.decision.allowed
        assert verdict.decision.reason == Reason.HEADER_NOT_REPLACED
        assert verdict.headers_to_set == () and verdict.headers_to_remove == ()
        assert to_answer(verdict, FORWARD).status == 403


def test_forward_auth_deny_carries_the_decision_id_as_a_header() -> None:
    denied = Verdict(decision=Decision(allowed=False, status=429, reason="l"), decision_id="d9")
    assert (DENY_DECISION_ID, "d9") in to_answer(denied, FORWARD).headers
    assert DENY_DECISION_ID not in dict(to_answer(denied, ENVOY).headers)


# -- both doors apply main's inbound checks through the same helpers (authz.wire.inbound) --

BIG = "x" * (LIMITS.max_header_value_bytes + 1)


@pytest.mark.parametrize(
    ("method", "host", "extra", "error"),
    [
        ("get", "shop.example.com", (), InvalidMethod),  # never upper-cased into a GET rule
        ("G" * (LIMITS.max_method_bytes + 1), "shop.example.com", (), AttributeTooLarge),
        ("GET", "shop.example.com/evil", (), InvalidHost),
        ("GET", "a..b", (), InvalidHost),
        ("GET", "h" * (LIMITS.max_host_bytes + 1), (), AttributeTooLarge),
        ("GET", "shop.example.com", (("x-big", BIG),), RequestTooLarge),
    ],
)
def test_the_http_door_refuses_what_the_grpc_door_refuses(
    method: str, host: str, extra: tuple[tuple[str, str], ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        grpc_to_request(check_request(method, "/api", host, dict(extra)), LIMITS)
    with pytest.raises(error):
        to_request(
            ENVOY,
            LIMITS,
            method=method,
            path="/api",
            query="",
            pairs=[("host", host), (ENVOY_PATH_HEADER, "/api"), *extra],
        )
    with pytest.raises(error):
        forward([("host", host), ("x-original-method", method), ("x-original-uri", "/api"), *extra])


def test_a_trusted_xfcc_is_bounded_like_envoys_principal_and_certificate() -> None:
    long_uri = "spiffe://cluster.local/" + "a" * LIMITS.max_principal_bytes
    with pytest.raises(AttributeTooLarge, match="principal"):
        envoy("/api", ("x-forwarded-client-cert", f"URI={long_uri}"), listener=ENVOY_XFCC)
    # The whole header is bounded before it is parsed (or reaches the XFCC cache).
    with pytest.raises(RequestTooLarge):
        envoy("/api", ("x-forwarded-client-cert", f"URI={FRONTEND};By={BIG}"), listener=ENVOY_XFCC)


def test_the_client_address_is_bounded() -> None:
    with pytest.raises(AttributeTooLarge, match="address"):
        envoy("/api", (ENVOY_ADDRESS_HEADER, "9" * 200))
    with pytest.raises(AttributeTooLarge, match="address"):
        forward([("host", "a"), ("x-original-method", "GET"), ("x-original-uri", "/api"),
                 ("x-forwarded-for", "1.2.3.4, " + "9" * 200)])  # fmt: skip


def test_envoy_mode_without_the_address_header_has_no_client_address() -> None:
    # x-forwarded-for is the client's to write: it never stands in for the address.
    assert envoy("/api", ("x-forwarded-for", "10.0.0.7")).source_ip is None


def test_both_doors_fill_the_same_pseudo_headers_host_and_content_length() -> None:
    request = envoy(
        "/api/a?q=1",
        ("content-length", "0"),  # Envoy's authorization request's own
        (ENVOY_CONTENT_LENGTH_HEADER, "12"),
        method="POST",
    )
    grpc = grpc_to_request(
        check_request(
            method="POST",
            path="/api/a?q=1",
            host="Shop.Example.com:443",
            headers={
                ":method": "POST",
                ":path": "/api/a?q=1",
                ":authority": "Shop.Example.com:443",
                "content-length": "12",
            },
        ),
        LIMITS,
    )
    for name in (":method", ":path", ":authority", "host", "content-length"):
        assert request.headers.get(name) == grpc.headers.get(name), name
    assert "host" not in request.headers  # HTTP/1's Host is :authority, as at the gRPC door
    # A request without a body: no content-length (Envoy's `-` or an empty value).
    for absent in ("-", ""):
        bodiless = envoy("/api", ("content-length", "0"), (ENVOY_CONTENT_LENGTH_HEADER, absent))
        assert "content-length" not in bodiless.headers


def test_the_modes_are_the_settings_choices() -> None:
    from authz.config_checks import HTTP_MODES

    assert tuple(HttpMode) == HTTP_MODES
