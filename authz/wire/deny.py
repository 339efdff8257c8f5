"""What a deny looks like to the client, at every door: its status and its JSON body."""

from __future__ import annotations

import json

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
DEFAULT_DENY_STATUS = 403


def deny_status(status: int) -> int:
    """The HTTP status a deny is sent with. Every door's."""
    return status if 400 <= status <= 599 else DEFAULT_DENY_STATUS


def deny_body(status: int, decision_id: str) -> str:
    """The JSON body of a deny: the public error and the decision id, never the reason.
    Every door's."""
    public = _PUBLIC_ERROR.get(status, "forbidden" if status < 500 else "internal_error")
    # json.dumps only for the id: the public text is a fixed identifier.
    return f'{{"error":"{public}","decision_id":{json.dumps(decision_id)}}}'
