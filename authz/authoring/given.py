"""What a policy test gives instead of a credential, and the service's own sources judging it.

A test case cannot hold a signed token or an API key (key files hold only hashes), so it gives
the verified claims, the introspection answer, or the key by `<provider>/<id>`. Each becomes a
placeholder credential put where the host's providers look for one, and the service's sources
run on the request as they would on the wire: the token lookup, the issuer choice, the claim
checks, the API-key lookup, the JWT-or-introspection routing. Only what a test cannot show is
given: the signature (`GivenTokens`), the endpoint's answer (`GivenAnswers`) and the key's hash
(`GivenKeys`).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from authz.config import Settings
from authz.errors import TokenRejected
from authz.identity import KeyRegistry, KeyWait
from authz.identity.apikeys import key_hash
from authz.identity.binding import Thumbprints
from authz.identity.introspection import Answer
from authz.identity.jwt import check_claims, choose_provider
from authz.identity.sources import ServiceResolver
from authz.model import EndUser, Request
from authz.policy.language.spec import (
    BEARER,
    Authentication,
    IntrospectionProvider,
    JwtProvider,
    TokenLocation,
)

__all__ = ["Credentials", "given_credentials"]

JWT_PLACEHOLDER = "given.verified.claims"  # JWS-shaped: the JWT providers judge it
OPAQUE_PLACEHOLDER = "given-introspected-token"
_KEY_PREFIX = "given-api-key:"


class GivenTokens:
    """A verifier that takes the signature of the placeholder token as verified, and checks
    everything else as `authz.identity.jwt.JwtVerifier` does after the signature."""

    def __init__(self, claims: Mapping[str, Any] | None) -> None:
        self._claims = claims

    def verify(
        self,
        token: str,
        providers: Sequence[JwtProvider],
        now: float,
        *,
        found_in: frozenset[TokenLocation] | None = None,
        wait: KeyWait = KeyWait.BLOCK,
    ) -> tuple[EndUser, int]:
        if token != JWT_PLACEHOLDER or self._claims is None:
            # A token written into the case's headers: nothing vouches for its signature.
            raise TokenRejected("a test case gives a token as claims", reason="jwt_malformed")
        index = choose_provider(self._claims, providers, found_in)
        return check_claims(self._claims, providers[index], now), index


class GivenAnswers:
    """The introspection answer a case gives (`introspection:`), or its claims as an active
    answer when a JWT-shaped token is introspected (a host without JWT providers)."""

    def __init__(self, answer: Mapping[str, Any] | None, claims: Mapping[str, Any] | None) -> None:
        self._answer = answer
        self._claims = claims

    def answer(self, provider: IntrospectionProvider, token: str, wait: KeyWait) -> Answer:
        given: Mapping[str, Any] | None = None
        if token == OPAQUE_PLACEHOLDER:
            given = self._answer
        elif token == JWT_PLACEHOLDER and self._claims is not None:
            given = {"active": True, **self._claims}
        if given is None or given.get("active") is not True:
            return Answer(False, MappingProxyType({}), 0.0)
        claims = {k: v for k, v in given.items() if k != "active"}
        return Answer(True, MappingProxyType(claims), time.time() + provider.cache_ttl)


class GivenKeys:
    """Hashes presented keys; the placeholder of a key given as `<provider>/<id>` hashes to that
    entry's stored hash (when the set has it)."""

    def __init__(self, auth: Authentication, given: str | None) -> None:
        self._stored: str | None = None
        if given is not None:
            name, _, key_id = given.partition("/")
            for provider in auth.api_key_providers:
                if provider.name == name:
                    self._stored = next(
                        (h for h, k in provider.keys.items() if k.id == key_id), None
                    )

    def __call__(self, key: str) -> str:
        if key.startswith(_KEY_PREFIX) and self._stored is not None:
            return self._stored
        return key_hash(key)


class GivenCertificate(Thumbprints):
    """The client certificate a case gives by its thumbprint (`certificate_thumbprint`, the
    base64url SHA-256 of the DER certificate), checked against a bound token as the service
    checks a real one."""

    def __init__(self, thumbprint: str | None) -> None:
        super().__init__(trust_xfcc=False)
        self._given = thumbprint

    def of(self, request: Request) -> str | None:
        return self._given


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the placeholders go, and the resolver that judges them."""

    headers: Mapping[str, str]
    path: str
    resolver: ServiceResolver
    notes: tuple[str, ...] = field(default=())


def given_credentials(
    settings: Settings,
    auth: Authentication,
    *,
    path: str,
    headers: Mapping[str, str],
    claims: Mapping[str, Any] | None,
    introspection: Mapping[str, Any] | None,
    api_key: str | None,
    certificate_thumbprint: str | None = None,
    introspected_by: str | None = None,
) -> Credentials:
    """The request's headers and path with the given credentials placed where the host's
    providers look for them, and the service's resolver with the given seams."""
    out = {k.lower(): v for k, v in headers.items()}
    notes: list[str] = []
    if introspection is not None:
        # In the locations of the provider the case names, else of the host's first one.
        named = [p for p in auth.introspection_providers if p.name == introspected_by]
        if introspected_by is not None and not named:
            notes.append(f"no introspection provider of this host is named {introspected_by!r}")
        candidates = named or list(auth.introspection_providers)
        where = candidates[0].locations[0] if candidates else BEARER
        path = _place(out, path, where, OPAQUE_PLACEHOLDER)
    elif claims is not None:
        issuer = claims.get("iss")
        chosen = [p for p in auth.jwt_providers if p.issuer == issuer] or list(auth.jwt_providers)
        where = chosen[0].locations[0] if chosen else BEARER
        if not chosen and auth.introspection_providers:
            where = auth.introspection_providers[0].locations[0]
        elif not chosen:
            notes.append(
                "the host has no JWT provider: the token is ignored, the request is anonymous"
            )
        path = _place(out, path, where, JWT_PLACEHOLDER)
    if api_key is not None:
        name = api_key.partition("/")[0]
        owner = next((p for p in auth.api_key_providers if p.name == name), None)
        owner = owner or (auth.api_key_providers[0] if auth.api_key_providers else None)
        if owner is None:
            notes.append(f"API key {api_key!r}: no API-key provider of this host reads keys")
        else:
            path = _place(out, path, owner.locations[0], _KEY_PREFIX + api_key)
    resolver = ServiceResolver(
        settings,
        KeyRegistry(),
        verifier=GivenTokens(claims),
        introspection=GivenAnswers(introspection, claims),
        digest=GivenKeys(auth, api_key),
        thumbprints=GivenCertificate(certificate_thumbprint),
    )
    return Credentials(MappingProxyType(out), path, resolver, tuple(notes))


def _place(headers: dict[str, str], path: str, where: TokenLocation, value: str) -> str:
    if where.header is not None:
        headers[where.header.lower()] = where.prefix + value
    elif where.query is not None:
        pair = urllib.parse.urlencode({where.query: value})
        path += ("&" if "?" in path else "?") + pair
    elif where.cookie is not None:
        crumb = f"{where.cookie}={value}"
        headers["cookie"] = f"{headers['cookie']}; {crumb}" if headers.get("cookie") else crumb
    return path
