"""A header's readings: the one reader of a header's values for conditions.

Envoy hands ext_authz a header sent several times as one value joined with `,` (and a list
header is one value with `,` already): a reader upstream may take any element, so each
comma-separated element is a reading (docs/policy.md, "One rule for ambiguous requests"). The
cookie header is joined with `; ` and read by `authz.request.cookies` instead.
"""

from __future__ import annotations

# An absent header has one reading: absent.
ABSENT: tuple[str | None, ...] = (None,)


def header_readings(value: str | None) -> tuple[str | None, ...]:
    """Every reading of a header value (`None`: the header is absent)."""
    if value is None:
        return ABSENT
    if "," not in value:
        return (value.strip(" \t"),)
    return tuple(element.strip(" \t") for element in value.split(","))
