"""Verdict -> CheckResponse, as POLICY.md's "What Envoy is told" says.

Allowed: status OK, identity headers overwritten (never appended), headers we did not set
removed. Denied: the HTTP status, a JSON body that names no rule or claim, and for 401 an RFC 6750
challenge. Both: dynamic metadata for Envoy's access log.
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

# google.rpc.Code values (google/rpc/code.proto); Envoy only looks at OK versus not OK, but a
# meaningful code helps whoever reads Envoy's ext_authz stats and logs.
_OK = 0
_GRPC_CODE_FOR_HTTP = {400: 3, 401: 16, 403: 7, 431: 8, 500: 13, 503: 14}
_PUBLIC_ERROR = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    431: "request_too_large",
    500: "internal_error",
    503: "unavailable",
}
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_JSON = HeaderValueOption(header=HeaderValue(key="content-type", value="application/json"))


def _overwrite(name: str, value: str) -> HeaderValueOption:
    # `append: false` for Envoys that read the deprecated field, `append_action` for the rest.
    option = HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=_OVERWRITE)
    option.append.value = False
    return option


def _metadata(verdict: Verdict) -> Struct:
    decision = verdict.decision
    metadata = Struct()
    metadata.update(
        {
            "decision_id": verdict.decision_id,
            "decision": "allow" if decision.allowed else "deny",
            "reason": decision.reason,
            "status": decision.status,
            "principal": verdict.principal,
            "request_principal": verdict.request_principal,
            "policy_revision": verdict.policy_revision,
        }
    )
    if decision.shadow:
        metadata.update(
            {
                "shadow": [
                    f"{m.rule}:{'would_' if m.dry_run else ''}{m.action}" for m in decision.shadow
                ]
            }
        )
    return metadata


def to_check_response(verdict: Verdict) -> CheckResponse:
    decision = verdict.decision
    if decision.allowed:
        ok = OkHttpResponse(
            headers=[_overwrite(name, value) for name, value in verdict.headers_to_set],
            headers_to_remove=verdict.headers_to_remove,
            query_parameters_to_remove=verdict.query_parameters_to_remove,
        )
        return CheckResponse(status=Status(code=_OK), ok_response=ok, dynamic_metadata=_metadata(verdict))
    return CheckResponse(
        status=Status(code=_GRPC_CODE_FOR_HTTP.get(decision.status, 7)),
        denied_response=_denied(decision.status, verdict.decision_id, decision.challenge),
        dynamic_metadata=_metadata(verdict),
    )


def internal_error_response(decision_id: str) -> CheckResponse:
    """A deny for when something unexpected happened inside a check: 403, never an allow."""
    metadata = Struct()
    metadata.update({"decision_id": decision_id, "decision": "deny", "reason": "internal_error", "status": 403})
    return CheckResponse(
        status=Status(code=13),
        denied_response=_denied(403, decision_id, None),
        dynamic_metadata=metadata,
    )


def _denied(status: int, decision_id: str, challenge: str | None) -> DeniedHttpResponse:
    headers = [_JSON]
    if challenge:
        headers.append(HeaderValueOption(header=HeaderValue(key="www-authenticate", value=challenge)))
    body = json.dumps(
        {"error": _PUBLIC_ERROR.get(status, "forbidden"), "decision_id": decision_id},
        separators=(",", ":"),
    )
    return DeniedHttpResponse(status=HttpStatus(code=status), headers=headers, body=body)  # type: ignore[arg-type]
