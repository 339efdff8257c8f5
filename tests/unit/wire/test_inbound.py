"""CheckRequest -> Request (authz.wire.inbound)."""

from __future__ import annotations

import pytest
from google.protobuf.struct_pb2 import Struct

from authz._proto.envoy.config.core.v3.base_pb2 import HeaderValue
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from authz.config import Limits
from authz.errors import (
    AttributeTooLarge,
    BadRequest,
    InvalidHost,
    InvalidMethod,
    InvalidPath,
    RequestTooLarge,
)
from authz.policy.language.patterns import normalize_host
from authz.wire.inbound import to_request

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
        "GET",
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
    # x-request-id, as the HTTP door reads it; http.id is Envoy's stream id (issue 25.10).
    assert request.request_id == "from-header"
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
        ("a_b.example", "a_b.example"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("[2001:db8::1]:443", "[2001:db8::1]"),
        ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"),
        ("127.0.0.1:9000", "127.0.0.1"),
        ("localhost", "localhost"),
        ("", ""),
    ],
)
def test_host_is_lower_case_without_port(authority: str, host: str) -> None:
    assert normalize_host(authority) == host
    assert normalize_host(host) == host  # canonical: the policy never normalizes it again
    assert to_request(check_request(host=authority), LIMITS).host == host


@pytest.mark.parametrize(
    "authority",
    [
        "shop.example.com..",  # exactly one trailing dot is removed
        "shop.example.com..:443",
        ".",
        ".shop.example.com",
        "shop..example.com",
        "shop.example.com:abc",  # a port is digits
        "shop.example.com:",
        "shop.example.com:443:443",
        "shop.example.com:\u0661\u0662",  # ARABIC-INDIC digits are not a port
        "\u212aiosk.example.com",  # KELVIN SIGN: Unicode lower() makes it "k"
        "shop.example.com\u00a0",  # NBSP
        "\u3000shop.example.com",  # IDEOGRAPHIC SPACE
        "shop.example.com\u0085",  # NEL
        "shop.example.com\u2028",  # LINE SEPARATOR
        " shop.example.com",
        "shop.example.com\t",
        "shop.example.com\r\n",
        "shop example.com",
        "-shop.example.com",
        "user@shop.example.com",
        "shop.example.com/admin",
        "*.example.com",
        "::1",  # IPv6 only in brackets
        "[::1",
        "[::1]]",
        "[::1]x",
        "[::g]",
        "[1:2:3:4:5:6:7:8:9]",
        "[shop.example.com]",
        "sh\u00f6p.example.com",  # IDNs arrive as punycode (xn--)
    ],
)
def test_anything_else_is_an_invalid_host(authority: str) -> None:
    assert normalize_host(authority) is None
    with pytest.raises(InvalidHost) as raised:
        to_request(check_request(host=authority), LIMITS)
    assert (raised.value.status, raised.value.reason) == (400, "invalid_host")
    # Through the header too, when Envoy's http.host is empty.
    with pytest.raises(InvalidHost):
        to_request(check_request(host="", headers={":authority": authority}), LIMITS)


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
    ],
    ids=["empty", "no-method", "no-path"],
)
def test_malformed_requests_are_bad_requests(message: CheckRequest, words: str) -> None:
    with pytest.raises(BadRequest) as raised:
        to_request(message, LIMITS)
    assert type(raised.value) is BadRequest
    assert (raised.value.status, raised.value.reason) == (400, "bad_request")
    assert words in str(raised.value)


@pytest.mark.parametrize(
    ("method", "words"),
    [
        ("get", "methods are upper case"),  # HTTP/2 lets a client send it; upstreams differ
        ("Get", "methods are upper case"),
        ("gET", "methods are upper case"),
        ("GE T", "is not an HTTP method"),
        ("GET\r\n", "is not an HTTP method"),
        ("G\u00c9T", "is not an HTTP method"),
        ("\u0261ET", "is not an HTTP method"),  # LATIN SMALL LETTER SCRIPT G
    ],
)
def test_a_method_that_is_not_an_upper_case_token_is_invalid(method: str, words: str) -> None:
    with pytest.raises(InvalidMethod) as raised:
        to_request(check_request(method=method), LIMITS)
    assert (raised.value.status, raised.value.reason) == (400, "invalid_method")
    assert words in str(raised.value)


@pytest.mark.parametrize("method", ["GET", "POST", "PROPFIND", "M-SEARCH", "X_CUSTOM.1"])
def test_upper_case_tokens_are_methods_as_sent(method: str) -> None:
    assert to_request(check_request(method=method), LIMITS).method == method


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


# -- every attribute read is bounded (issue 10.2) ----------------------------------------------


def _raises_attribute_too_large(message: CheckRequest, limits: Limits, words: str) -> None:
    with pytest.raises(AttributeTooLarge) as raised:
        to_request(message, limits, jwt_metadata_namespace=JWT_NS)
    assert (raised.value.status, raised.value.reason) == (400, "attribute_too_large")
    assert words in str(raised.value)


def _with_source(principal: str = "", certificate: str = "", address: str = "") -> CheckRequest:
    message = check_request()
    source = message.attributes.source
    source.principal, source.certificate = principal, certificate
    if address:
        source.address.socket_address.address = address
    return message


def test_the_defaults_are_documented_sizes() -> None:
    assert (LIMITS.max_principal_bytes, LIMITS.max_certificate_bytes) == (2048, 16384)
    assert (LIMITS.max_method_bytes, LIMITS.max_host_bytes) == (32, 1024)


def test_principal_limit() -> None:
    limits = Limits(max_principal_bytes=64)
    at_limit = "spiffe://td/" + "p" * 52
    assert to_request(_with_source(principal=at_limit), limits).peer_principal == at_limit
    _raises_attribute_too_large(
        _with_source(principal=at_limit + "p"),
        limits,
        "source.principal is longer than the limit of 64 bytes",
    )
    # The limit is in bytes: 22 characters, 66 bytes.
    _raises_attribute_too_large(_with_source(principal="\u20ac" * 22), limits, "principal")


def test_certificate_limit() -> None:
    limits = Limits(max_certificate_bytes=100)
    assert to_request(_with_source(certificate="c" * 100), limits).peer_certificate == "c" * 100
    _raises_attribute_too_large(_with_source(certificate="c" * 101), limits, "source.certificate")


def test_source_address_is_bounded() -> None:
    address = "2001:db8:1:2:3:4:5:6"
    assert to_request(_with_source(address=address), LIMITS).source_ip == address
    _raises_attribute_too_large(_with_source(address="1" * 129), LIMITS, "source.address")


def test_method_limit() -> None:
    limits = Limits(max_method_bytes=8)
    assert to_request(check_request(method="M" * 8), limits).method == "M" * 8
    _raises_attribute_too_large(
        check_request(method="M" * 9), limits, "method is longer than the limit of 8 bytes"
    )


def test_host_limit_counts_the_authority_as_sent() -> None:
    limits = Limits(max_host_bytes=20)
    assert to_request(check_request(host="a" * 15 + ":8080"), limits).host == "a" * 15
    _raises_attribute_too_large(check_request(host="a" * 16 + ":8080"), limits, "host")
    _raises_attribute_too_large(
        check_request(host="", headers={"host": "a" * 21}),
        limits,
        "host is longer than the limit of 20 bytes",
    )


def test_header_value_limit() -> None:
    limits = Limits(max_header_value_bytes=10)
    assert to_request(check_request(headers={"x-a": "v" * 10}), limits).headers["x-a"] == "v" * 10
    _raises_too_large(
        check_request(headers={"x-a": "v" * 11}),
        limits,
        "the value of the header 'x-a' is longer than the limit of 10 bytes",
    )
    # http.id (Envoy's stream id) is not read, so not bounded either.
    assert to_request(check_request(request_id="i" * 11), limits).request_id == ""


def test_header_value_limit_applies_to_joined_raw_headers() -> None:
    # Repeated x-forwarded-client-cert entries are joined into one value: that is bounded too.
    limits = Limits(max_header_value_bytes=10)
    raw = check_request()
    raw.attributes.request.http.header_map.headers.extend(
        HeaderValue(key="x-forwarded-client-cert", raw_value=b"By=a") for _ in range(3)
    )
    _raises_too_large(raw, limits, "x-forwarded-client-cert")


def _with_payload(payload: dict[str, object]) -> CheckRequest:
    message = check_request()
    struct = Struct()
    struct.update({"payload": payload})
    message.attributes.metadata_context.filter_metadata[JWT_NS].CopyFrom(struct)
    return message


def test_jwt_metadata_size_limit() -> None:
    message = _with_payload({"sub": "s" * 200})
    size = message.attributes.metadata_context.filter_metadata[JWT_NS].ByteSize()
    at_limit = Limits(max_metadata_bytes=size)
    claims = to_request(message, at_limit, jwt_metadata_namespace=JWT_NS).jwt_metadata
    assert claims == {"payload": {"sub": "s" * 200}}
    _raises_attribute_too_large(message, Limits(max_metadata_bytes=size - 1), "metadata is larger")
    # Not read, so not refused, when the operator does not enable jwt_authn metadata.
    assert to_request(message, Limits(max_metadata_bytes=size - 1)).jwt_metadata == {}


def test_jwt_metadata_depth_limit() -> None:
    def nested(depth: int) -> dict[str, object]:
        claims: dict[str, object] = {"leaf": 1}
        for _ in range(depth - 1):
            claims = {"n": claims}
        return claims

    limits = Limits(max_metadata_depth=4)
    assert to_request(_with_payload(nested(4)), limits, jwt_metadata_namespace=JWT_NS).jwt_metadata
    _raises_attribute_too_large(
        _with_payload(nested(5)), limits, "nests deeper than the limit of 4"
    )
    # Lists count as a level too.
    listed = _with_payload({"a": [[[{"b": 1}]]]})  # payload 1, list 2, list 3, list 4, object 5
    _raises_attribute_too_large(listed, limits, "nests deeper")


def test_context_extensions_are_read() -> None:
    message = check_request()
    message.attributes.context_extensions.update({"api": "partners", "tier": "b2b"})
    assert to_request(message, LIMITS).context == {"api": "partners", "tier": "b2b"}
    assert to_request(check_request(), LIMITS).context == {}


@pytest.mark.parametrize(
    ("extensions", "limits"),
    [
        ({f"k{i}": "v" for i in range(5)}, Limits(max_context_extensions=4)),
        ({"k": "v" * 100}, Limits(max_context_bytes=64)),
        ({"k": "é" * 40}, Limits(max_context_bytes=64)),  # 80 bytes in 41 characters
    ],
)
def test_context_extensions_are_bounded(extensions: dict[str, str], limits: Limits) -> None:
    message = check_request()
    message.attributes.context_extensions.update(extensions)
    with pytest.raises(AttributeTooLarge, match="context_extensions"):
        to_request(message, limits)
