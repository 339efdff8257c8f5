"""CheckRequest -> Request (authz.wire.inbound)."""

from __future__ import annotations

import pytest
from google.protobuf.struct_pb2 import Struct

from authz._proto.envoy.config.core.v3.base_pb2 import HeaderValue
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import BadRequest, InvalidPath, RequestTooLarge
from authz.wire.inbound import host_of, to_request

LIMITS = Limits()
JWT_NS = "envoy.filters.http.jwt_authn"


def check_request(
    method: str = "GET",
    path: str = "/api/orders",
    host: str = "shop.example.com",
    headers: dict[str, str] | None = None,
    *,
    request_id: str = "",
    source: str = "10.1.2.3",
    destination_port: int = 8080,
) -> CheckRequest:
    """A CheckRequest as Envoy's HTTP filter sends it (headers as the `headers` map)."""
    message = CheckRequest()
    attributes = message.attributes
    http = attributes.request.http
    http.method, http.path, http.host, http.id = method, path, host, request_id
    http.protocol = "HTTP/1.1"
    http.headers.update(headers or {})
    attributes.source.address.socket_address.address = source
    attributes.source.address.socket_address.port_value = 40000
    attributes.destination.address.socket_address.address = "10.0.0.1"
    attributes.destination.address.socket_address.port_value = destination_port
    return message


def test_an_http2_request() -> None:
    message = check_request(
        "get",
        "/api/orders?page=2",
        "Shop.Example.COM:8443",
        {
            ":method": "GET",
            ":path": "/api/orders?page=2",
            ":authority": "Shop.Example.COM:8443",
            ":scheme": "https",
            "content-type": "application/grpc",
            "x-request-id": "from-header",
        },
        request_id="from-envoy",
        source="2001:db8::7",
        destination_port=8443,
    )
    message.attributes.request.http.protocol = "HTTP/2"
    message.attributes.source.principal = "spiffe://cluster.local/ns/shop/sa/frontend"
    message.attributes.source.certificate = "-----BEGIN%20CERTIFICATE-----%0A"

    request = to_request(message, LIMITS)

    assert request.method == "GET"
    assert request.path == "/api/orders"
    assert request.raw_path == "/api/orders?page=2"
    assert request.query == "page=2"
    assert request.host == "shop.example.com"
    assert request.headers[":authority"] == "Shop.Example.COM:8443"
    assert request.headers["content-type"] == "application/grpc"
    assert request.source_ip == "2001:db8::7"
    assert request.destination_port == 8443
    assert request.peer_principal == "spiffe://cluster.local/ns/shop/sa/frontend"
    assert request.peer_certificate == "-----BEGIN%20CERTIFICATE-----%0A"
    assert request.request_id == "from-envoy"  # http.id wins over the header
    assert request.jwt_metadata == {}


def test_an_http1_request_without_pseudo_headers() -> None:
    message = check_request(
        "POST",
        "/cart/items",
        "",
        {"Host": "Shop.Example.com:80", "X-Request-ID": "abc", "Accept": "*/*"},
    )
    request = to_request(message, LIMITS)
    assert request.method == "POST"
    assert request.host == "shop.example.com"  # from the Host header when http.host is empty
    assert request.headers == {
        "host": "Shop.Example.com:80",
        "x-request-id": "abc",
        "accept": "*/*",
    }
    assert request.request_id == "abc"
    assert request.query == ""


def test_host_falls_back_to_authority_then_host_header() -> None:
    message = check_request(host="", headers={":authority": "a.example:1", "host": "b.example"})
    assert to_request(message, LIMITS).host == "a.example"
    message = check_request(host="", headers={})
    assert to_request(message, LIMITS).host == ""


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("shop.example.com", "shop.example.com"),
        ("Shop.Example.COM:8443", "shop.example.com"),
        ("shop.example.com.", "shop.example.com"),
        ("shop.example.com.:443", "shop.example.com"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("[2001:db8::1]:443", "[2001:db8::1]"),
        ("127.0.0.1:9000", "127.0.0.1"),
        ("", ""),
    ],
)
def test_host_is_lower_case_without_port_or_trailing_dot(authority: str, host: str) -> None:
    assert host_of(authority) == host
    assert to_request(check_request(host=authority), LIMITS).host == host


def test_header_map_is_read_when_envoy_sends_raw_headers() -> None:
    message = check_request(headers={"ignored": "map"})
    header_map = message.attributes.request.http.header_map
    header_map.headers.extend(
        [
            HeaderValue(key=":authority", raw_value=b"shop.example.com"),
            HeaderValue(key="X-Multi", raw_value=b"one"),
            HeaderValue(key="x-multi", raw_value=b"two"),
            HeaderValue(key="cookie", raw_value=b"a=1"),
            HeaderValue(key="cookie", raw_value=b"session=tok"),
            HeaderValue(key="x-utf8", raw_value="caf\u00e9".encode()),
            HeaderValue(key="x-latin1", raw_value=b"caf\xe9"),
            HeaderValue(key="x-string", value="as string"),
        ]
    )
    request = to_request(message, LIMITS)
    assert request.headers == {
        ":authority": "shop.example.com",
        "x-multi": "one,two",  # joined with "," as Envoy joins its map
        "cookie": "a=1; session=tok",  # RFC 9113 section 8.2.3
        "x-utf8": "caf\u00e9",
        "x-latin1": "caf\ufffd",  # never lone surrogates
        "x-string": "as string",
    }


def test_jwt_metadata_is_read_only_for_the_given_namespace() -> None:
    message = check_request()
    payload = Struct()
    payload.update(
        {
            "payload": {
                "iss": "https://id.example.com",
                "exp": 1_800_000_000,
                "ratio": 0.5,
                "aud": ["a", "b"],
                "realm": {"roles": ["admin"], "on": True},
                "none": None,
            },
            "not-a-struct": "ignored",
        }
    )
    message.attributes.metadata_context.filter_metadata[JWT_NS].CopyFrom(payload)

    assert to_request(message, LIMITS).jwt_metadata == {}
    assert to_request(message, LIMITS, jwt_metadata_namespace="other").jwt_metadata == {}
    claims = to_request(message, LIMITS, jwt_metadata_namespace=JWT_NS).jwt_metadata
    assert claims == {
        "payload": {
            "iss": "https://id.example.com",
            "exp": 1_800_000_000,
            "ratio": 0.5,
            "aud": ["a", "b"],
            "realm": {"roles": ["admin"], "on": True},
            "none": None,
        }
    }
    exp = claims["payload"]["exp"]
    assert type(exp) is int  # Struct numbers are doubles; an integral one reads as an int


def test_missing_addresses_are_none() -> None:
    message = CheckRequest()
    message.attributes.request.http.method = "GET"
    message.attributes.request.http.path = "/"
    message.attributes.source.address.pipe.path = "/run/envoy.sock"
    request = to_request(message, LIMITS)
    assert (request.source_ip, request.destination_port) == (None, None)
    assert (request.peer_principal, request.peer_certificate, request.request_id) == ("", "", "")


# -- malformed requests -----------------------------------------------------------------------


def _without(field: str) -> CheckRequest:
    message = check_request()
    message.attributes.request.http.ClearField(field)
    return message


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (CheckRequest(), "no method"),
        (_without("method"), "no method"),
        (_without("path"), "no path"),
        (check_request(method="GE T"), "not an HTTP token"),
        (check_request(method="GET\r\n"), "not an HTTP token"),
    ],
    ids=["empty", "no-method", "no-path", "space-in-method", "crlf-in-method"],
)
def test_malformed_requests_are_bad_requests(message: CheckRequest, words: str) -> None:
    with pytest.raises(BadRequest) as raised:
        to_request(message, LIMITS)
    assert type(raised.value) is BadRequest
    assert (raised.value.status, raised.value.reason) == (400, "bad_request")
    assert words in str(raised.value)


@pytest.mark.parametrize("path", ["/a/%2F/b", "/a/..;/b", "relative", "/a\x00b"])
def test_unsafe_paths_are_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidPath) as raised:
        to_request(check_request(path=path), LIMITS)
    assert (raised.value.status, raised.value.reason) == (400, "invalid_path")


# -- limits ---------------------------------------------------------------------------------


def _raises_too_large(message: CheckRequest, limits: Limits, words: str) -> None:
    with pytest.raises(RequestTooLarge) as raised:
        to_request(message, limits)
    assert (raised.value.status, raised.value.reason) == (431, "request_too_large")
    assert words in str(raised.value)


def test_header_count_limit() -> None:
    limits = Limits(max_headers=3)
    at_limit = {f"h{i}": "v" for i in range(3)}
    assert len(to_request(check_request(headers=at_limit), limits).headers) == 3
    _raises_too_large(
        check_request(headers={**at_limit, "h3": "v"}), limits, "more headers than the limit of 3"
    )

    raw = check_request()
    raw.attributes.request.http.header_map.headers.extend(
        HeaderValue(key="x-same", raw_value=b"v")
        for _ in range(4)  # one name, four entries
    )
    _raises_too_large(raw, limits, "more headers than the limit of 3")


def test_header_bytes_limit_counts_names_and_values_in_bytes() -> None:
    limits = Limits(max_header_bytes=100)
    exactly = {"n" * 10: "v" * 40, "m" * 10: "w" * 40}  # 100 bytes
    assert to_request(check_request(headers=exactly), limits).headers
    _raises_too_large(
        check_request(headers={**exactly, "x": ""}), limits, "larger than the limit of 100 bytes"
    )
    # 40 characters, 120 bytes: the limit is in bytes.
    _raises_too_large(
        check_request(headers={"x": "\u20ac" * 40}), limits, "larger than the limit of 100 bytes"
    )


def test_path_bytes_limit_includes_the_query() -> None:
    limits = Limits(max_path_bytes=64)
    assert to_request(check_request(path="/" + "a" * 63), limits).path == "/" + "a" * 63
    _raises_too_large(
        check_request(path="/" + "a" * 64), limits, "path is longer than the limit of 64 bytes"
    )
    _raises_too_large(check_request(path="/a?" + "q" * 62), limits, "path")
    _raises_too_large(check_request(path="/" + "\u00e9" * 40), limits, "path")  # 81 bytes, 41 chars


def test_limits_are_checked_before_the_path_is_parsed() -> None:
    # An oversized unsafe path is refused as too large: nothing is parsed past a limit.
    _raises_too_large(check_request(path="/%2F" * 100), Limits(max_path_bytes=64), "path")


def test_the_request_is_frozen() -> None:
    request = to_request(check_request(), LIMITS)
    with pytest.raises(AttributeError):
        request.path = "/other"  # type: ignore[misc]


def test_protobuf_values_are_not_kept() -> None:
    # The Request holds plain Python values only: nothing from the wire layer leaks inward.
    request = to_request(check_request(headers={"a": "b"}), LIMITS, jwt_metadata_namespace=JWT_NS)
    assert type(request.headers) is dict
    assert all(type(k) is str and type(v) is str for k, v in request.headers.items())


def test_map_keys_that_differ_only_in_case_are_refused() -> None:
    # Envoy never sends them, and a map has no order to join them in: refuse, never guess.
    message = check_request(headers={"authorization": "\x00", "Authorization": "Bearer x"})
    with pytest.raises(BadRequest) as raised:
        to_request(message, LIMITS)
    assert type(raised.value) is BadRequest
    assert "'authorization' is sent twice" in str(raised.value)


def test_an_upper_case_map_key_alone_is_lower_cased() -> None:
    request = to_request(check_request(headers={"Authorization": "Bearer x"}), LIMITS)
    assert request.headers == {"authorization": "Bearer x"}
