"""The one reader of a verified token's claims: `when: claim` conditions, `claims_to_headers`
(authz.engine), `claim:` rate-limit keys (authz.limits.keys) and the decision log all find a
claim here, so a namespaced claim (`https://example.com/tenant`) is the same claim to each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING: Any = object()  # what `claim_value` returns for an absent claim


def claim_value(claims: object, name: str) -> Any:
    """The claim `name`; dotted names reach into nested objects (`realm_access.roles`).

    A top-level claim whose name contains dots (`https://example.com/roles`, as Auth0 writes
    namespaced claims) is found first under its full name. Returns `MISSING` when absent.
    """
    if not isinstance(claims, Mapping):
        return MISSING
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def nested_claim(claims: object, dotted: str) -> object:
    """`claim_value`, with None for an absent claim (what sends or counts a claim needs)."""
    value = claim_value(claims, dotted)
    return None if value is MISSING else value


def scalar_text(value: object) -> str | None:
    """A string as it is, a number or a boolean in JSON spelling; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None
