"""Finding the JWT in a request: header (with prefix), query parameter or cookie.

Follows Envoy jwt_authn's `from_headers` / `from_params` / `from_cookies`: a header counts only
when its value starts with the configured prefix (compared case-insensitively, since RFC 9110
section 11.1 makes the auth scheme case-insensitive; `Authorization: Basic ...` is simply not a
bearer token), a query parameter by exact name, a cookie by exact name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from authz.errors import TokenRejected
from authz.model import Request
from authz.policy.spec import TokenLocation
from authz.request.cookies import parse_cookies
from authz.request.query import parse_query

__all__ = ["FoundToken", "find_token"]


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
                if token is None:
                    token, first = value, location
                elif value != token:
                    raise TokenRejected("more than one token", reason="jwt_malformed")
                where.add(location)
    if token is None or first is None:
        return None
    return FoundToken(token, first, frozenset(where))


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
    # Envoy joins a repeated header with ","; a JWT never contains one. Every element is
    # looked at, so `Authorization: junk` sent beside `Authorization: Bearer <bad>` cannot make
    # the bad token invisible (and the request anonymous): the caller then rejects it.
    prefix = location.prefix
    if not prefix:
        return [joined.strip()]
    found = []
    for element in joined.split(","):
        element = element.lstrip()
        if element[: len(prefix)].lower() == prefix.lower():
            found.append(element[len(prefix) :].strip())
    return found
