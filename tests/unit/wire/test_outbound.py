"""Verdict -> CheckResponse (authz.wire.outbound), as docs/policy.md's "What Envoy is told" says."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from authz._proto.envoy.config.core.v3.base_pb2 import HeaderValueOption
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz.model import Decision, ShadowMatch, Verdict
from authz.wire import outbound
from authz.wire.outbound import grpc_code_for, internal_error_response, to_check_response

OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
SECRET_RULE = "deny-interns-from-payroll"


def verdict(decision: Decision, **extra: Any) -> Verdict:
    return Verdict(
        decision=decision,
        decision_id="d-42",
        policy_revision="rev-3",
        principal="spiffe://cluster.local/ns/shop/sa/frontend",
        request_principal="https://id.example.com/user-1",
        **extra,
    )


def deny(status: int, reason: str = SECRET_RULE, challenge: str | None = None) -> CheckResponse:
    return to_check_response(
        verdict(Decision(False, status, reason, rule=reason, challenge=challenge))
    )


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def metadata(response: CheckResponse) -> dict[str, Any]:
    return dict(MessageToDict(response.dynamic_metadata))


def test_allow() -> None:
    response = to_check_response(
        verdict(
            Decision(True, 200, "frontend-reads-orders", rule="frontend-reads-orders"),
            headers_to_set=(
                ("x-authz-principal", "spiffe://cluster.local/ns/shop/sa/frontend"),
                ("x-authz-decision-id", "d-42"),
                ("x-user-id", "user-1"),
            ),
            headers_to_remove=("x-authz-request-principal", "authorization"),
            query_parameters_to_remove=("access_token",),
        )
    )
    assert response.status.code == 0
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert [(o.header.key, o.header.value) for o in ok.headers] == [
        ("x-authz-principal", "spiffe://cluster.local/ns/shop/sa/frontend"),
        ("x-authz-decision-id", "d-42"),
        ("x-user-id", "user-1"),
    ]
    for option in ok.headers:
        # docs/policy.md: always append false, so a client-sent copy is overwritten; both the
        # deprecated field (set, and false) and append_action say so.
        assert option.HasField("append") and option.append.value is False
        assert option.append_action == OVERWRITE
    assert list(ok.headers_to_remove) == ["x-authz-request-principal", "authorization"]
    assert list(ok.query_parameters_to_remove) == ["access_token"]
    assert not ok.HasField("dynamic_metadata")  # the deprecated one would override the real one
    assert metadata(response) == {
        "decision_id": "d-42",
        "decision": "allow",
        "reason": "frontend-reads-orders",
        "status": 200.0,
        "principal": "spiffe://cluster.local/ns/shop/sa/frontend",
        "request_principal": "https://id.example.com/user-1",
        "policy_revision": "rev-3",
        "shadow": [],
    }


def test_allow_without_headers() -> None:
    response = to_check_response(verdict(Decision(True, 200, "open")))
    assert response.status.code == 0
    assert response.HasField("ok_response")
    assert len(response.ok_response.headers) == 0
    assert len(response.ok_response.headers_to_remove) == 0


def test_shadow_matches_are_in_the_metadata() -> None:
    shadow = (
        ShadowMatch("audit-all", "audit", False),
        ShadowMatch("try-admin", "allow", True),
        ShadowMatch("try-block", "deny", True),
    )
    response = to_check_response(verdict(Decision(False, 403, "no_matching_rule", shadow=shadow)))
    assert metadata(response)["shadow"] == [
        "audit-all:audit",
        "try-admin:would_allow",
        "try-block:would_deny",
    ]


def test_deny_403() -> None:
    response = deny(403)
    assert response.status.code == 7  # PERMISSION_DENIED
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == 403
    assert headers_of(denied.headers) == {"content-type": "application/json"}
    assert json.loads(denied.body) == {"error": "forbidden", "decision_id": "d-42"}
    assert metadata(response)["decision"] == "deny"
    assert metadata(response)["reason"] == SECRET_RULE  # the reason goes to the metadata only


def test_deny_401_carries_the_challenge() -> None:
    challenge = 'Bearer realm="shop", error="invalid_token"'
    response = deny(401, "jwt_expired", challenge)
    assert response.status.code == 16  # UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    assert headers_of(denied.headers) == {
        "content-type": "application/json",
        "www-authenticate": challenge,
    }
    assert json.loads(denied.body) == {"error": "unauthorized", "decision_id": "d-42"}


def test_deny_401_without_a_challenge_has_no_www_authenticate() -> None:
    assert "www-authenticate" not in headers_of(
        deny(401, "no_matching_rule").denied_response.headers
    )


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, 3, "bad_request"),
        (401, 16, "unauthorized"),
        (403, 7, "forbidden"),
        (404, 5, "not_found"),
        (429, 8, "too_many_requests"),
        (431, 3, "request_too_large"),
        (500, 13, "internal_error"),
        (503, 14, "unavailable"),
        (418, 7, "forbidden"),
        (502, 13, "internal_error"),
    ],
)
def test_deny_status_codes(status: int, code: int, error: str) -> None:
    response = deny(status)
    assert (response.status.code, response.denied_response.status.code) == (code, status)
    assert json.loads(response.denied_response.body)["error"] == error


@pytest.mark.parametrize("status", [0, 200, 204, 302, 399, 600, -1])
def test_a_deny_with_a_non_error_status_is_still_a_403_deny(status: int) -> None:
    response = deny(status)
    assert response.status.code == 7
    assert response.denied_response.status.code == 403
    assert metadata(response)["status"] == 403.0


def test_no_deny_status_ever_maps_to_ok() -> None:
    for status in range(-5, 1000):
        assert grpc_code_for(status) != 0
        response = deny(status)
        assert response.status.code != 0
        assert response.WhichOneof("http_response") == "denied_response"


def test_the_body_never_names_the_rule_or_reason() -> None:
    for status in (400, 401, 403, 431, 500):
        body = deny(status, SECRET_RULE, 'Bearer error="invalid_token"').denied_response.body
        assert SECRET_RULE not in body
        assert set(json.loads(body)) == {"error", "decision_id"}


def test_internal_error_response_is_a_deny() -> None:
    response = internal_error_response("d-err")
    assert response.status.code == 13  # INTERNAL, and above all not OK
    assert response.WhichOneof("http_response") == "denied_response"  # not error_response
    assert response.denied_response.status.code == 403
    assert json.loads(response.denied_response.body) == {
        "error": "forbidden",
        "decision_id": "d-err",
    }
    assert headers_of(response.denied_response.headers) == {"content-type": "application/json"}
    assert metadata(response) == {
        "decision_id": "d-err",
        "decision": "deny",
        "reason": "internal_error",
        "status": 403.0,
    }


def test_responses_do_not_share_mutable_parts() -> None:
    first = deny(403)
    first.denied_response.headers[0].header.value = "text/html"
    second = deny(403)
    assert headers_of(second.denied_response.headers)["content-type"] == "application/json"
    assert outbound._CONTENT_TYPE_JSON.header.value == "application/json"


def test_responses_survive_the_wire() -> None:
    for response in (
        to_check_response(verdict(Decision(True, 200, "r"), headers_to_set=(("x-a", "b"),))),
        deny(401, challenge="Bearer"),
        internal_error_response("d"),
    ):
        assert CheckResponse.FromString(response.SerializeToString()) == response


def test_the_api_key_principal_is_in_the_metadata_only_when_a_key_was_presented() -> None:
    from authz.model import Decision, Verdict
    from authz.wire.outbound import to_check_response

    decision = Decision(allowed=True, status=200, reason="r", rule="r")
    keyed = to_check_response(Verdict(decision, "id-1", api_key_principal="partners/acme-1"))
    assert keyed.dynamic_metadata.fields["api_key_principal"].string_value == "partners/acme-1"
    plain = to_check_response(Verdict(decision, "id-2"))
    assert "api_key_principal" not in plain.dynamic_metadata.fields


def test_an_allow_is_built_from_every_verdict_field_but_the_ones_it_ignores() -> None:
    # A cached allow is found by `_allow_key`: a Verdict field added later must be in the key
    # (or deliberately in ALLOW_IGNORES), or two verdicts differing in it would share an answer.
    fields = {f.name for f in dataclasses.fields(Verdict)}
    base = verdict(Decision(True, 200, "r", rule="r"))
    keyed = set()
    for name in fields - outbound.ALLOW_IGNORES:
        value = getattr(base, name)
        other: Any = (
            Decision(True, 200, "other")
            if name == "decision"
            else (("x-other", "1"),)
            if name == "headers_to_set"
            else ("x-other",)
            if isinstance(value, tuple)
            else value + "-other"
        )
        if outbound._allow_key(base) != outbound._allow_key(
            dataclasses.replace(base, **{name: other})
        ):
            keyed.add(name)
    assert keyed == fields - outbound.ALLOW_IGNORES


@pytest.mark.parametrize("repeat", [1, 2, 3])
def test_a_repeated_allow_is_the_allow_built_afresh(repeat: int) -> None:
    decision = Decision(True, 200, "r", rule="r", shadow=(ShadowMatch("a", "deny", True),))
    for n in range(repeat):
        decision_id = f"d-{repeat}-{n}"
        v = verdict(
            decision,
            headers_to_set=(("x-authz-decision-id", decision_id), ("x-user-id", "user-1")),
            headers_to_remove=("authorization",),
        )
        v = dataclasses.replace(v, decision_id=decision_id)
        response = to_check_response(v)
        assert response == outbound._allow(v)
        assert response.SerializeToString(deterministic=True) == outbound._allow(
            v
        ).SerializeToString(deterministic=True)
        assert headers_of(response.ok_response.headers)["x-authz-decision-id"] == decision_id
        assert metadata(response)["decision_id"] == decision_id


def test_allows_differing_in_any_built_field_are_not_shared() -> None:
    first = verdict(Decision(True, 200, "r"), headers_to_set=(("x-user-id", "user-1"),))
    second = dataclasses.replace(first, headers_to_set=(("x-user-id", "user-2"),))
    to_check_response(first)
    assert headers_of(to_check_response(second).ok_response.headers)["x-user-id"] == "user-2"
    third = dataclasses.replace(first, principal="spiffe://other")
    assert metadata(to_check_response(third))["principal"] == "spiffe://other"
