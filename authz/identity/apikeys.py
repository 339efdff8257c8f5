"""API keys: the third identity (docs/policy.md, "API keys").

A key is looked for in the locations of the host's `authentication.api_keys` providers (header
with an optional prefix, query parameter, cookie, as for JWTs), hashed with SHA-256, and the
hash looked up in the provider's key file. Hashing first means the lookup's timing depends on
the hash, never on how much of a stored key a guess shares; nothing is cached, so a flood of
wrong keys costs one hash each and no memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from authz.errors import ApiKeyRejected
from authz.model import ApiKeyUser, Request
from authz.policy.language.spec import ApiKeyProvider, TokenLocation
from authz.request.cookies import parse_cookies
from authz.request.query import parse_query

__all__ = ["find_api_key", "key_hash"]


def key_hash(key: str) -> str:
    """The hex SHA-256 of a key, as key files store it."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def find_api_key(
    request: Request,
    providers: Iterable[ApiKeyProvider],
    digest: Callable[[str], str] = key_hash,
) -> ApiKeyUser | None:
    """The known API key of the request, None when it presents none (`digest` hashes it).

    Raises ApiKeyRejected (401 `api_key_invalid`) for a key no provider knows, an empty key,
    or two different keys (a header sent twice, a repeated query parameter): which one counted
    would depend on the reader, so neither does.
    """
    found: tuple[str, TokenLocation] | None = None
    owners: list[ApiKeyProvider] = []
    query: Mapping[str, tuple[str, ...]] | None = None
    cookies: dict[str, list[str]] | None = None
    for provider in providers:
        for location in provider.locations:
            values: Sequence[str]
            if location.header is not None:
                values = _from_header(request, location)
            elif location.query is not None:
                if query is None:
                    query = parse_query(request.query)
                values = query.get(location.query, ())
            elif location.cookie is not None:
                if cookies is None:
                    cookies = parse_cookies(request.headers.get("cookie", ""))
                values = cookies.get(location.cookie, [])
            else:
                continue
            for value in values:
                if not value:
                    raise ApiKeyRejected("the API key is empty", realm=provider.name)
                if found is None:
                    found = (value, location)
                elif value != found[0]:
                    raise ApiKeyRejected("more than one API key", realm=provider.name)
            if values and provider not in owners:
                owners.append(provider)
    if found is None:
        return None
    hashed = digest(found[0])
    for provider in owners:
        entry = provider.keys.get(hashed)
        if entry is not None:
            return ApiKeyUser(provider.name, entry, found_at=found[1])
    raise ApiKeyRejected("the API key is not known", realm=owners[0].name)


def _from_header(request: Request, location: TokenLocation) -> list[str]:
    assert location.header is not None
    joined = request.headers.get(location.header.lower())
    if joined is None:
        return []
    # Envoy joins a header sent twice with ","; a key never holds one (`authz apikey new`
    # makes URL-safe base64), so every element counts and two different ones are refused.
    prefix = location.prefix.lower()
    found = []
    for element in joined.split(","):
        element = element.strip()
        if not prefix:
            found.append(element)
        elif element[: len(prefix)].lower() == prefix:
            found.append(element[len(prefix) :].strip())
    return found
