"""Finding the JWT in a request: header (with prefix), query parameter or cookie.

Follows Envoy jwt_authn's `from_headers` / `from_params` / `from_cookies`: a header counts only
when its value starts with the configured prefix (compared case-insensitively, since RFC 9110
section 11.1 makes the auth scheme case-insensitive; `Authorization: Basic ...` is simply not a
bearer token), a query parameter by exact name, a cookie by exact name.

A token header has one spelling every door reads alike (docs/policy.md, "One rule for
ambiguous requests"): when its value mentions the prefix at all (in any case), it must be
exactly the prefix and one token of base64url characters and dots (RFC 7515 section 7.1), else
the request is refused. Envoy's jwt_authn finds the prefix anywhere in the joined value and
reads the base64url run after it; refusing every other spelling here, and in the export
(authz/export/refusals.py), keeps the two from ever reading different tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from authz.errors import TokenRejected
from authz.model import Request
from authz.policy.language.spec import TokenLocation
from authz.request.cookies import parse_cookies
from authz.request.query import parse_query

__all__ = [
    "TOKEN_CHARS",
    "FoundToken",
    "find_token",
    "header_token_regex",
    "mentions_regex",
    "prefix_regex",
]

# A compact JWS: base64url parts joined by "." (RFC 7515 section 7.1), what jwt_authn reads.
TOKEN_CHARS = "[A-Za-z0-9_.-]+"


def prefix_regex(prefix: str) -> str:
    """`prefix` in any case, as a regex both Python and RE2 (Envoy) read the same."""
    escaped = "".join(c if c.isalnum() or c == " " else "\\" + c for c in prefix)
    return f"(?i:{escaped})"


def mentions_regex(prefix: str) -> str:
    """A header value that is meant as a token header: it holds the prefix (in any case), or
    is the prefix alone once trimmed (an empty token)."""
    return f"(?s).*{prefix_regex(prefix)}.*|{prefix_regex(prefix.strip())}"


def header_token_regex(prefix: str) -> str:
    """The one accepted spelling of a token header with `prefix`: the prefix in any case,
    blanks, the token."""
    return f"{prefix_regex(prefix)} *{TOKEN_CHARS}" if prefix else TOKEN_CHARS


class _Reads(Protocol):
    @property
    def locations(self) -> tuple[TokenLocation, ...]: ...


@dataclass(frozen=True, slots=True)
class FoundToken:
    """A token and every location it was found in (the same token may sit in several)."""

    token: str
    location: TokenLocation
    locations: frozenset[TokenLocation]


def find_token(request: Request, providers: Iterable[_Reads]) -> FoundToken | None:
    """The request's token, looked for in the locations of all `providers`, or None.

    Raises TokenRejected (jwt_malformed) when the request carries two *different* tokens: the
    identity of such a request would depend on which one we read first. Istio documents
    requests with more than one JWT as unsupported; refusing them is the fail-closed reading.

    Raises TokenRejected (token_in_two_places) when the same token is in two places (a header
    and a query parameter, a header and a cookie, two headers): RFC 6750 section 2 allows one
    method per request, and a `forward: false` token must not reach the upstream, which no
    enforcement point can promise for every copy (Envoy's jwt_authn removes only a header it
    read; nginx and Traefik cannot remove a query parameter). A copy repeated in one place (a
    parameter sent twice, under two spellings) is one place, removed as a whole.
    """
    token: str | None = None
    first: TokenLocation | None = None
    seen: set[TokenLocation] = set()
    where: set[TokenLocation] = set()
    sources = _Sources(request)
    for provider in providers:
        for location in provider.locations:
            if location in seen:
                continue
            seen.add(location)
            for value in sources.values(location):
                if not value:
                    raise TokenRejected("the token is empty", reason="jwt_malformed")
                if token is None or first is None:
                    token, first = value, location
                elif value != token:
                    raise TokenRejected("more than one token", reason="jwt_malformed")
                elif _place(location) != _place(first):
                    raise TokenRejected(
                        f"the token is sent in more than one place ({_describe(first)} and "
                        f"{_describe(location)})",
                        reason="token_in_two_places",
                    )
                where.add(location)
    if token is None or first is None:
        return None
    return FoundToken(token, first, frozenset(where))


def _place(location: TokenLocation) -> tuple[str, str]:
    """Where a location reads: a header (any prefix, name in any case), a query parameter or a
    cookie, by name."""
    if location.header is not None:
        return "header", location.header.lower()
    if location.query is not None:
        return "query", location.query
    return "cookie", location.cookie or ""


def _describe(location: TokenLocation) -> str:
    kind, name = _place(location)
    return f"{kind} {name}"


class _Sources:
    """Where a request can carry a token; the query and the cookies are parsed at most once."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._query: Mapping[str, tuple[str, ...]] | None = None
        self._cookies: dict[str, list[str]] | None = None

    def values(self, location: TokenLocation) -> Sequence[str]:
        if location.header is not None:
            return _from_header(self._request, location)
        if location.query is not None:
            if self._query is None:
                self._query = parse_query(self._request.query)
            return self._query.get(location.query, ())
        if location.cookie is not None:
            if self._cookies is None:
                self._cookies = parse_cookies(self._request.headers.get("cookie", ""))
            return self._cookies.get(location.cookie, [])
        return []


def _from_header(request: Request, location: TokenLocation) -> list[str]:
    assert location.header is not None
    joined = request.headers.get(location.header.lower())
    if joined is None:
        return []
    # Envoy joins a repeated header with ","; a JWT never contains one, so a repeated token
    # header (or junk beside a token) is refused: it cannot hide a bad token either.
    prefix = location.prefix
    value = joined.strip()
    if prefix and value.lower() == prefix.strip().lower():
        # `Authorization: Bearer ` (Envoy trims the blank): a token header with no token.
        raise TokenRejected("the token is empty", reason="jwt_malformed")
    if prefix and prefix.lower() not in value.lower():
        return []  # `Authorization: Basic ...` is simply not a bearer token
    if value and not _spelling(prefix).fullmatch(value):
        raise TokenRejected("the token header is not one token", reason="jwt_malformed")
    return [value[len(prefix) :].strip()]


_SPELLINGS: dict[str, re.Pattern[str]] = {}


def _spelling(prefix: str) -> re.Pattern[str]:
    pattern = _SPELLINGS.get(prefix)
    if pattern is None:
        pattern = _SPELLINGS[prefix] = re.compile(header_token_regex(prefix))
    return pattern
