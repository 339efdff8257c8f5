"""Verdict -> CheckResponse, as POLICY.md's "What Envoy is told" says.

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

import json

from google.protobuf.struct_pb2 import Struct

from authz._proto.envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from authz._proto.envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from authz._proto.envoy.type.v3.http_status_pb2 import HttpStatus
from authz._proto.google.rpc.status_pb2 import Status
from authz.model import Verdict

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
# The body's public text: the status, never the reason (that goes to the decision log).
_PUBLIC_ERROR = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    429: "too_many_requests",
    431: "request_too_large",
    500: "internal_error",
    503: "unavailable",
}
# A deny must look like one to the client whatever the status says: anything outside 4xx/5xx
# (a bug upstream of here) becomes 403.
_DEFAULT_DENY_STATUS = 403

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_STATUS_OK = Status(code=OK)


def _option(name: str, value: str) -> HeaderValueOption:
    option = HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=_OVERWRITE)
    option.append.value = False  # sets the BoolValue: present and false
    return option


# Built once: copied into each response by the repeated field, never mutated.
_CONTENT_TYPE_JSON = _option("content-type", "application/json")


def to_check_response(verdict: Verdict) -> CheckResponse:
    """The CheckResponse for `verdict`: an allow only when `verdict.decision.allowed`."""
    decision = verdict.decision
    if decision.allowed:
        ok = OkHttpResponse(
            headers=[_option(name, value) for name, value in verdict.headers_to_set],
            headers_to_remove=verdict.headers_to_remove,
            query_parameters_to_remove=verdict.query_parameters_to_remove,
        )
        return CheckResponse(
            status=_STATUS_OK, ok_response=ok, dynamic_metadata=_metadata(verdict)
        )
    status = decision.status if 400 <= decision.status <= 599 else _DEFAULT_DENY_STATUS
    return CheckResponse(
        status=Status(code=grpc_code_for(status)),
        denied_response=_denied(status, verdict.decision_id, decision.challenge),
        dynamic_metadata=_metadata(verdict, status),
    )


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
            "status": _DEFAULT_DENY_STATUS,
        }
    )
    return CheckResponse(
        status=Status(code=INTERNAL),
        denied_response=_denied(_DEFAULT_DENY_STATUS, decision_id, None),
        dynamic_metadata=metadata,
    )


def grpc_code_for(http_status: int) -> int:
    """The google.rpc.Code sent for a denied HTTP status; never OK."""
    code = _GRPC_CODE.get(http_status)
    if code is not None:
        return code
    return INTERNAL if http_status >= 500 else PERMISSION_DENIED


def _denied(status: int, decision_id: str, challenge: str | None) -> DeniedHttpResponse:
    headers = [_CONTENT_TYPE_JSON]
    if challenge:
        headers.append(_option("www-authenticate", challenge))
    body = json.dumps(
        {"error": _PUBLIC_ERROR.get(status, "forbidden" if status < 500 else "internal_error"),
         "decision_id": decision_id},
        separators=(",", ":"),
    )
    # The StatusCode enum lists every status Envoy knows; protobuf enums are open in proto3, so
    # the int is sent as is.
    return DeniedHttpResponse(
        status=HttpStatus(code=status),  # type: ignore[arg-type]
        headers=headers,
        body=body,
    )


def _metadata(verdict: Verdict, status: int | None = None) -> Struct:
    decision = verdict.decision
    metadata = Struct()
    metadata.update(
        {
            "decision_id": verdict.decision_id,
            "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason,
            "status": decision.status if status is None else status,
            "principal": verdict.principal,
            "request_principal": verdict.request_principal,
            "policy_revision": verdict.policy_revision,
            # "rule:action" for audit rules, "rule:would_action" for dry-run ones.
            "shadow": [
                f"{m.rule}:{'would_' if m.dry_run else ''}{m.action}" for m in decision.shadow
            ],
        }
    )
    return metadata
