"""Our protos against an independent implementation of Envoy's API: envoy-data-plane's
betterproto2 classes, generated from Envoy's own .proto files.

Requests go their classes -> bytes -> ours; responses go ours -> bytes -> theirs. Each side is
compared field by field by walking our descriptors, so a field we dropped, renumbered or typed
differently shows up by name. A second walk checks that the request really sets every field,
so the comparison cannot pass by comparing defaults.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import envoy_data_plane.envoy.config.core.v3 as edp_core
import envoy_data_plane.envoy.service.auth.v3 as edp_auth
import envoy_data_plane.envoy.type.v3 as edp_type
import pytest
from envoy_data_plane.google import protobuf as edp_pb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from authz._proto.envoy.config.core.v3 import address_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.model import Decision, ShadowMatch, Verdict
from authz.wire.outbound import to_check_response

WHEN = dt.datetime(2026, 11, 23, 13, 59, 2, 123456, tzinfo=dt.UTC)
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"


def _peer(address: Any, name: str) -> Any:
    return edp_auth.AttributeContextPeer(
        address=address,
        service=f"{name}-service",
        labels={"app": name, "version": "v1"},
        principal=f"spiffe://cluster.local/ns/shop/sa/{name}",
        certificate="-----BEGIN%20CERTIFICATE-----%0AMIIB"
        + name
        + "%0A-----END%20CERTIFICATE-----%0A",
    )


def their_full_check_request() -> Any:
    """A CheckRequest with every field of AttributeContext and everything nested set."""
    source = _peer(
        edp_core.Address(
            socket_address=edp_core.SocketAddress(
                protocol=edp_core.SocketAddressProtocol.UDP,
                address="2001:db8::7",
                port_value=40000,
                resolver_name="custom-resolver",
                ipv4_compat=True,
                network_namespace_filepath="/var/run/netns/blue",
            )
        ),
        "frontend",
    )
    destination = _peer(
        edp_core.Address(
            socket_address=edp_core.SocketAddress(address="10.0.0.1", port_value=8443)
        ),
        "orders",
    )
    http = edp_auth.AttributeContextHttpRequest(
        id="8f1c2d3e-request-id",
        method="POST",
        headers={":method": "POST", ":path": "/api/orders?x=1", "cookie": "a=1", "x-multi": "1,2"},
        header_map=edp_core.HeaderMap(
            headers=[
                edp_core.HeaderValue(key=":authority", value="shop.example.com"),
                edp_core.HeaderValue(key="x-raw", raw_value=b"caf\xc3\xa9 \xff"),
            ]
        ),
        path="/api/orders?x=1#frag",
        host="shop.example.com:8443",
        scheme="https",
        query="x=1",
        fragment="frag",
        size=-1,
        protocol="HTTP/2",
        body='{"item": "\u00e9"}',
        raw_body=b"\x00\x01binary\xff",
    )
    claims = {
        "iss": "https://id.example.com",
        "sub": "user-1",
        "exp": 1_800_000_000,
        "aud": ["shop-api", "other"],
        "realm_access": {"roles": ["admin"], "nested": {"deep": True}},
        "nothing": None,
        "ratio": 0.5,
    }
    metadata = edp_core.Metadata(
        filter_metadata={
            JWT_NAMESPACE: edp_pb.Struct.from_dict({"payload": claims}),
            "com.example.other": edp_pb.Struct.from_dict({"k": "v"}),
        },
        typed_filter_metadata={
            "com.example.typed": edp_pb.Any(type_url="type.googleapis.com/x.Y", value=b"\x08\x01")
        },
    )
    route_metadata = edp_core.Metadata(
        filter_metadata={"route": edp_pb.Struct.from_dict({"team": "shop"})},
        typed_filter_metadata={
            "route.typed": edp_pb.Any(type_url="type.googleapis.com/x.Z", value=b"")
        },
    )
    return edp_auth.CheckRequest(
        attributes=edp_auth.AttributeContext(
            source=source,
            destination=destination,
            request=edp_auth.AttributeContextRequest(time=WHEN, http=http),
            context_extensions={"virtual_host": "shop", "route": "orders"},
            metadata_context=metadata,
            route_metadata_context=route_metadata,
            tls_session=edp_auth.AttributeContextTlsSession(sni="shop.example.com"),
        )
    )


# -- field-by-field comparison ------------------------------------------------------------------


def _theirs_is_set(value: Any) -> bool:
    return value is not None


def assert_same(ours: Message, theirs: Any, where: str = "") -> None:
    """Every field of our message equals the same-named field of theirs (recursively)."""
    full_name = ours.DESCRIPTOR.full_name
    if full_name == "google.protobuf.Timestamp":
        assert ours.ToDatetime(tzinfo=dt.UTC) == theirs, where
        return
    if full_name == "google.protobuf.Struct":
        assert MessageToDict(ours) == theirs.to_dict(), where
        return
    if full_name in ("google.protobuf.BoolValue",):
        assert ours.value == theirs, where
        return
    for field in ours.DESCRIPTOR.fields:
        path = f"{where}.{field.name}" if where else field.name
        mine = getattr(ours, field.name)
        other = getattr(theirs, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            assert set(mine) == set(other), path
            for key in mine:
                if value_field.message_type is not None:
                    assert_same(mine[key], other[key], f"{path}[{key!r}]")
                else:
                    assert mine[key] == other[key], f"{path}[{key!r}]"
        elif field.is_repeated:
            assert len(mine) == len(other), path
            for i, (a, b) in enumerate(zip(mine, other, strict=True)):
                if field.message_type is not None:
                    assert_same(a, b, f"{path}[{i}]")
                else:
                    assert a == b, f"{path}[{i}]"
        elif field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.BoolValue" and not ours.HasField(
                field.name
            ):
                assert other is None, path
            elif ours.HasField(field.name):
                assert _theirs_is_set(other), f"{path}: set on our side only"
                assert_same(mine, other, path)
            else:
                assert not _theirs_is_set(other), f"{path}: set on their side only"
        elif field.enum_type is not None:
            assert mine == int(other), path
        elif field.containing_oneof is not None and not ours.HasField(field.name):
            assert other is None, f"{path}: oneof member set on their side only"
        else:
            assert mine == other, f"{path}: ours {mine!r}, theirs {other!r}"


def unset_fields(message: Message, where: str = "") -> Iterator[str]:
    """Paths of fields left at their default, skipping the oneof members not chosen."""
    for field in message.DESCRIPTOR.fields:
        path = f"{where}.{field.name}" if where else field.name
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            if not value:
                yield path
        elif field.message_type is not None:
            if not message.HasField(field.name):
                yield path
            elif not field.message_type.full_name.startswith("google.protobuf."):
                yield from unset_fields(value, path)
        elif value == field.default_value:
            yield path


# -- requests: theirs -> ours ---------------------------------------------------------------------


def test_a_fully_populated_check_request_parses_field_for_field() -> None:
    theirs = their_full_check_request()
    ours = external_auth_pb2.CheckRequest.FromString(bytes(theirs))

    # The test only means something if the request is full: nothing but unchosen oneof members
    # (and the destination's ipv4_compat/resolver etc., left out on purpose) may be default.
    left_default = set(unset_fields(ours))
    assert left_default == {
        "attributes.destination.address.socket_address.resolver_name",
        "attributes.destination.address.socket_address.ipv4_compat",
        "attributes.destination.address.socket_address.network_namespace_filepath",
        "attributes.destination.address.socket_address.protocol",
    }, left_default

    assert_same(ours, theirs)
    # A few by hand, so a bug in the walker cannot hide everything.
    attributes = ours.attributes
    assert attributes.source.address.socket_address.address == "2001:db8::7"
    assert attributes.source.address.socket_address.port_value == 40000
    assert attributes.destination.address.socket_address.port_value == 8443
    assert attributes.source.certificate.startswith("-----BEGIN%20CERTIFICATE")
    http = attributes.request.http
    assert http.header_map.headers[1].raw_value == b"caf\xc3\xa9 \xff"
    assert http.raw_body == b"\x00\x01binary\xff"
    assert http.size == -1
    assert attributes.request.time.ToDatetime(tzinfo=dt.UTC) == WHEN
    claims = MessageToDict(attributes.metadata_context.filter_metadata[JWT_NAMESPACE])["payload"]
    assert claims["realm_access"] == {"roles": ["admin"], "nested": {"deep": True}}
    assert attributes.tls_session.sni == "shop.example.com"
    assert dict(attributes.context_extensions) == {"virtual_host": "shop", "route": "orders"}


@pytest.mark.parametrize(
    ("theirs", "kind"),
    [
        (edp_core.Address(pipe=edp_core.Pipe(path="@abstract/envoy.sock", mode=0o600)), "pipe"),
        (
            edp_core.Address(
                envoy_internal_address=edp_core.EnvoyInternalAddress(
                    server_listener_name="internal-listener", endpoint_id="ep-1"
                )
            ),
            "envoy_internal_address",
        ),
        (
            edp_core.Address(
                socket_address=edp_core.SocketAddress(address="10.0.0.2", named_port="http")
            ),
            "socket_address",
        ),
    ],
    ids=["pipe", "internal", "named-port"],
)
def test_every_address_kind_parses(theirs: Any, kind: str) -> None:
    ours = address_pb2.Address.FromString(bytes(theirs))
    assert ours.WhichOneof("address") == kind
    assert_same(ours, theirs)


def test_our_request_parses_in_theirs() -> None:
    """The other way too: a request built with ours is the same message for them."""
    ours = external_auth_pb2.CheckRequest.FromString(bytes(their_full_check_request()))
    theirs = edp_auth.CheckRequest.parse(ours.SerializeToString())
    assert_same(ours, theirs)


# -- responses: ours -> theirs --------------------------------------------------------------------


def _verdict(decision: Decision, **extra: Any) -> Verdict:
    return Verdict(
        decision=decision,
        decision_id="d-123",
        policy_revision="rev-7",
        principal="spiffe://cluster.local/ns/shop/sa/frontend",
        request_principal="https://id.example.com/user-1",
        **extra,
    )


@pytest.mark.filterwarnings("ignore:HeaderValueOption.append is deprecated")
def test_our_allow_parses_in_theirs() -> None:
    verdict = _verdict(
        Decision(
            allowed=True,
            status=200,
            reason="frontend-reads-orders",
            rule="frontend-reads-orders",
            shadow=(
                ShadowMatch("audit-all", "audit", False),
                ShadowMatch("try-admin", "allow", True),
            ),
        ),
        headers_to_set=(
            ("x-authz-principal", "spiffe://cluster.local/ns/shop/sa/frontend"),
            ("x-user-id", "user-1"),
        ),
        headers_to_remove=("x-authz-request-principal", "authorization"),
        query_parameters_to_remove=("access_token",),
    )
    ours = to_check_response(verdict)
    theirs = edp_auth.CheckResponse.parse(ours.SerializeToString())
    assert_same(ours, theirs)

    assert theirs.status.code == 0
    assert theirs.denied_response is None and theirs.error_response is None
    ok = theirs.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == list(verdict.headers_to_set)
    for option in ok.headers:
        assert option.append is False  # present and false, not merely unset
        assert (
            option.append_action
            == edp_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
        )
    assert ok.headers_to_remove == ["x-authz-request-principal", "authorization"]
    assert ok.query_parameters_to_remove == ["access_token"]
    assert ok.dynamic_metadata is None  # the deprecated field stays unset
    assert theirs.dynamic_metadata.to_dict() == {
        "decision_id": "d-123",
        "decision": "allow",
        "reason": "frontend-reads-orders",
        "status": 200.0,
        "principal": "spiffe://cluster.local/ns/shop/sa/frontend",
        "request_principal": "https://id.example.com/user-1",
        "policy_revision": "rev-7",
        "shadow": ["audit-all:audit", "try-admin:would_allow"],
    }


@pytest.mark.filterwarnings("ignore:HeaderValueOption.append is deprecated")
def test_our_deny_parses_in_theirs() -> None:
    challenge = 'Bearer error="invalid_token"'
    verdict = _verdict(
        Decision(allowed=False, status=401, reason="jwt_expired", challenge=challenge)
    )
    ours = to_check_response(verdict)
    theirs = edp_auth.CheckResponse.parse(ours.SerializeToString())
    assert_same(ours, theirs)

    assert theirs.status.code == 16  # UNAUTHENTICATED
    assert theirs.ok_response is None and theirs.error_response is None
    denied = theirs.denied_response
    assert denied.status.code == edp_type.StatusCode.Unauthorized
    assert {h.header.key: h.header.value for h in denied.headers} == {
        "content-type": "application/json",
        "www-authenticate": challenge,
    }
    assert json.loads(denied.body) == {"error": "unauthorized", "decision_id": "d-123"}
    metadata = theirs.dynamic_metadata.to_dict()
    assert (metadata["decision"], metadata["reason"], metadata["status"]) == (
        "deny",
        "jwt_expired",
        401.0,
    )
