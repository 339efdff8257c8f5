"""How a check judged its JWT, for traces. A leaf module: the errors (`TokenRejected`) and the
model (`EndUser`) both carry one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """How a check judged its JWT, for traces: from the verified-token cache (`cached`), or
    verified now, from `started_ns` (time.time_ns()) for `duration_ns`."""

    cached: bool
    started_ns: int = 0
    duration_ns: int = 0
    # Which source judged the token: "jwt" (a signature) or "introspection" (an RFC 7662 answer).
    source: str = "jwt"


FROM_CACHE = TokenCheck(cached=True)
