"""Verdict -> CheckResponse, as docs/policy.md's "What Envoy is told" says.

Allowed: `status.code` OK, the headers for the upstream set with `append: false` *and*
`append_action: OVERWRITE_IF_EXISTS_OR_ADD` (the first for Envoys that still read the deprecated
field, the second for the rest), and the headers we own but did not set removed.
Denied: a non-OK `status.code`, and a `DeniedHttpResponse` with the HTTP status, a JSON body that
names no rule, claim or reason, and for 401 the RFC 6750 challenge.
Both: `dynamic_metadata`, which Envoy's ext_authz filter emits under its own namespace
(`envoy.filters.http.ext_authz`) for the access log.

A deny is always a `denied_response`, never an `error_response`: Envoy treats the latter as the
service failing and then honours `failure_mode_allow`, which could let the request through.
"""

from __future__ import annotations

from google.protobuf.struct_pb2 import Struct

from authz._proto.envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from authz._proto.google.rpc.status_pb2 import Status
from authz.model import Verdict
from authz.wire.deny import DEFAULT_DENY_STATUS
from authz.wire.deny import deny_body as deny_body  # every door's; importable from here too
from authz.wire.deny import deny_status as deny_status

# google.rpc.Code (google/rpc/code.proto). Envoy only asks OK or not; a fitting code helps whoever
# reads ext_authz stats and gRPC logs.
OK = 0
INVALID_ARGUMENT = 3
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_GRPC_CODE = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    429: RESOURCE_EXHAUSTED,
    431: INVALID_ARGUMENT,
    500: INTERNAL,
    503: UNAVAILABLE,
}

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_STATUS_OK = Status(code=OK)


def _option(name: str, value: str) -> HeaderValueOption:
    option = HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=_OVERWRITE)
    option.append.value = False  # sets the BoolValue: present and false
    return option


# Built once: copied into each response by the repeated field, never mutated.
_CONTENT_TYPE_JSON = _option("content-type", "application/json")


# Allows built before, by everything they are built from but the decision id (`_allow_key`),
# with where that id goes; a hit is copied (one C call) and the id written in. Templates are
# never mutated once stored; the cache is emptied when full (a principal per user could fill it).
_ALLOWS: dict[tuple[object, ...], tuple[CheckResponse, tuple[int, ...]]] = {}
_MAX_ALLOWS = 4096
# The Verdict fields an allow is not built from (the decision id is written into each copy).
ALLOW_IGNORES = frozenset({"decision_id", "evidence", "response_headers", "token_check"})


def _allow_key(verdict: Verdict) -> tuple[object, ...]:
    """Every Verdict field an allow is built from but `decision_id` (ALLOW_IGNORES), with the
    header values equal to the decision id (`x-authz-decision-id`) left out."""
    decision_id = verdict.decision_id
    return (
        verdict.decision,
        verdict.policy_revision,
        verdict.principal,
        verdict.request_principal,
        verdict.api_key_principal,
        tuple((n, None) if v == decision_id else (n, v) for n, v in verdict.headers_to_set),
        verdict.headers_to_remove,
        verdict.query_parameters_to_remove,
    )


def to_check_response(verdict: Verdict) -> CheckResponse:
    """The CheckResponse for `verdict`: an allow only when `verdict.decision.allowed`."""
    decision = verdict.decision
    if decision.allowed:
        decision_id = verdict.decision_id
        key = _allow_key(verdict)
        cached = _ALLOWS.get(key)
        if cached is None:
            template = _allow(verdict)
            ids = tuple(i for i, (_, v) in enumerate(verdict.headers_to_set) if v == decision_id)
            if len(_ALLOWS) >= _MAX_ALLOWS:
                _ALLOWS.clear()
            _ALLOWS[key] = (template, ids)
            cached = template, ids
        template, ids = cached
        response = CheckResponse()
        response.CopyFrom(template)
        response.dynamic_metadata.fields["decision_id"].string_value = decision_id
        if ids:
            headers = response.ok_response.headers
            for i in ids:
                headers[i].header.value = decision_id
        return response
    status = deny_status(decision.status)
    response = CheckResponse(
        status=Status(code=grpc_code_for(status)), dynamic_metadata=_metadata(verdict, status)
    )
    _denied(response, status, verdict.decision_id, decision.challenge)
    for name, value in verdict.response_headers:
        option = response.denied_response.headers.add()
        option.header.key = name
        option.header.value = value
        option.append.value = False
        option.append_action = _OVERWRITE
    return response


def _allow(verdict: Verdict) -> CheckResponse:
    response = CheckResponse(status=_STATUS_OK, dynamic_metadata=_metadata(verdict))
    ok = response.ok_response
    ok.SetInParent()  # an allow with nothing to change is still an ok_response
    for name, value in verdict.headers_to_set:
        option = ok.headers.add()
        option.header.key = name
        option.header.value = value
        option.append.value = False  # sets the BoolValue: present and false
        option.append_action = _OVERWRITE
    ok.headers_to_remove.extend(verdict.headers_to_remove)
    ok.query_parameters_to_remove.extend(verdict.query_parameters_to_remove)
    return response


def internal_error_response(decision_id: str) -> CheckResponse:
    """The deny sent when anything unexpected happened inside a check: 403 to the client (it
    learns nothing about our failure), INTERNAL to Envoy, reason `internal_error` in the
    metadata. Built from constants only, so it cannot fail itself."""
    metadata = Struct()
    metadata.update(
        {
            "decision_id": decision_id,
            "decision": "deny",
            "reason": "internal_error",
            "status": DEFAULT_DENY_STATUS,
        }
    )
    response = CheckResponse(status=Status(code=INTERNAL), dynamic_metadata=metadata)
    _denied(response, DEFAULT_DENY_STATUS, decision_id, None)
    return response


def grpc_code_for(http_status: int) -> int:
    """The google.rpc.Code sent for a denied HTTP status; never OK."""
    code = _GRPC_CODE.get(http_status)
    if code is not None:
        return code
    return INTERNAL if http_status >= 500 else PERMISSION_DENIED


def _denied(response: CheckResponse, status: int, decision_id: str, challenge: str | None) -> None:
    """Fill `response.denied_response` in place (no intermediate messages to copy)."""
    denied = response.denied_response
    # The StatusCode enum lists every status Envoy knows; proto3 enums are open, so the int is
    # sent as is.
    denied.status.code = status  # type: ignore[assignment]
    denied.headers.append(_CONTENT_TYPE_JSON)  # copied into the response
    if challenge:
        option = denied.headers.add()
        option.header.key = "www-authenticate"
        option.header.value = challenge
        option.append.value = False
        option.append_action = _OVERWRITE
    denied.body = deny_body(status, decision_id)


def _metadata(verdict: Verdict, status: int | None = None) -> Struct:
    decision = verdict.decision
    metadata = Struct()
    # Set field by field: about twice as fast as Struct.update, and this runs on every check.
    fields = metadata.fields
    fields["decision_id"].string_value = verdict.decision_id
    fields["decision"].string_value = "allow" if decision.allowed else "deny"
    fields["reason"].string_value = decision.reason
    fields["status"].number_value = decision.status if status is None else status
    fields["principal"].string_value = verdict.principal
    fields["request_principal"].string_value = verdict.request_principal
    if verdict.api_key_principal:  # only when a key was presented: no cost for the others
        fields["api_key_principal"].string_value = verdict.api_key_principal
    fields["policy_revision"].string_value = verdict.policy_revision
    # "rule:action" for audit rules, "rule:would_action" for dry-run ones; always a list.
    shadow = fields["shadow"].list_value
    shadow.SetInParent()
    for match in decision.shadow:
        shadow.values.add().string_value = (
            f"{match.rule}:{'would_' if match.dry_run else ''}{match.action}"
        )
    return metadata
