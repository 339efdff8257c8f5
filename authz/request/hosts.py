"""The request's host, as policies match it (docs/policy.md, "Which files apply to a request").

Part of the request grammar: pure, below both the wire and the policy language.
"""

from __future__ import annotations

import ipaddress
import re

# One host label as policies write it (lower-case; `_` as Kubernetes service names allow).
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")

# A request's host: a name of policy labels (a dotted IPv4 address is one) with at most one
# trailing dot, or an IPv6 literal in brackets; then an optional port of ASCII digits.
_LABEL_TEXT = LABEL.pattern
_AUTHORITY = re.compile(
    rf"(?:(?P<name>{_LABEL_TEXT}(?:\.{_LABEL_TEXT})*)\.?|(?P<literal>\[[0-9a-f:.]+\]))"
    r"(?::[0-9]+)?"
)


def normalize_host(authority: str) -> str | None:
    """`:authority` as matched (docs/policy.md), or None when it is not a valid host.

    ASCII letters are lower-cased and nothing else is folded or trimmed: a non-ASCII character
    (the KELVIN SIGN, which Unicode lower-cases to `k`) or any whitespace makes the host
    invalid, so no spelling can reach a host's policy that Envoy would route elsewhere. The
    port (digits only) is removed, and exactly one trailing dot: `shop.example.com.` names the
    same host, left alone it would skip the host's own files (and their deny rules) in favour
    of host-less ones; `shop.example.com..` is invalid. An IPv6 literal keeps its brackets.
    An empty authority is no host at all (`""`): only files without `hosts` apply to it.
    The result is canonical: normalizing it again returns it unchanged.
    """
    if not authority:
        return ""
    if not authority.isascii():
        return None
    match = _AUTHORITY.fullmatch(authority.lower())
    if match is None:
        return None
    name = match["name"]
    if name is not None:
        return name
    literal = match["literal"]
    try:
        ipaddress.IPv6Address(literal[1:-1])
    except ValueError:
        return None
    return literal
