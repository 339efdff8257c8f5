"""Reading one claim of a verified token as text, for what sends or counts it: the headers
`claims_to_headers` sets (authz.engine) and the `claim:` key of a rate limit (authz.limits.keys).
The rules' own claim conditions read claims in authz.policy.conditions."""

from __future__ import annotations

from collections.abc import Mapping


def nested_claim(claims: object, dotted: str) -> object:
    """The claim at `dotted` (`realm_access.roles` reaches into nested objects); None when
    absent."""
    value = claims
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def scalar_text(value: object) -> str | None:
    """A string as it is, a number or a boolean in JSON spelling; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None
