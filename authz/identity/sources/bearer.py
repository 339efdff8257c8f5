"""What the bearer-token sources (JWT, introspection) share: the verifier seam, telling a JWT
from an opaque token, and which source a token belongs to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from authz.identity.jwt import KeyWait
from authz.model import EndUser
from authz.policy.language.spec import Authentication, JwtProvider, TokenLocation

__all__ = ["TokenVerifier", "introspected_by", "looks_like_jwt", "token_locations"]

# RFC 7515 section 7.1: the JWS compact serialization is three base64url parts joined by dots.
_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


class TokenVerifier(Protocol):
    """Verifies a JWT for one of a host's providers (`authz.identity.jwt.JwtVerifier`)."""

    def verify(
        self,
        token: str,
        providers: Sequence[JwtProvider],
        now: float,
        *,
        found_in: frozenset[TokenLocation] | None = None,
        wait: KeyWait = KeyWait.BLOCK,
    ) -> tuple[EndUser, int]:
        """The user and the index in `providers` of the provider that accepted the token."""


def looks_like_jwt(token: str) -> bool:
    """The token has the shape of a JWS (three dot-separated base64url parts)."""
    return _JWS_COMPACT.fullmatch(token) is not None


def token_locations(auth: Authentication) -> frozenset[TokenLocation]:
    """Every location any bearer-token provider of the host reads."""
    return frozenset(
        where
        for providers in (auth.jwt_providers, auth.introspection_providers)
        for p in providers
        for where in p.locations
    )


def introspected_by(
    auth: Authentication, token: str, found_in: frozenset[TokenLocation]
) -> int | None:
    """The index in `auth.introspection_providers` of the provider that judges `token` (found
    in `found_in`), None when the JWT providers judge it (docs/policy.md, "Which tokens"): a
    token that is not a JWT, or any token for `tokens: all`, or any token on a host without
    JWT providers, goes to the first introspection provider reading one of its locations."""
    jwt = bool(auth.jwt_providers) and looks_like_jwt(token)
    for index, provider in enumerate(auth.introspection_providers):
        if found_in.intersection(provider.locations) and (not jwt or provider.tokens == "all"):
            return index
    return None
