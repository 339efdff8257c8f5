"""The end user from an opaque token, by OAuth 2.0 token introspection (RFC 7662).

The token is looked for in the locations of the host's `introspection` providers; the provider
that judges it is chosen by `authz.identity.sources.bearer.introspected_by` (the JWT source
leaves it alone by the same function). An active answer's members are the token's claims, checked
as a verified JWT's are (`authz.identity.jwt.check_claims`: `exp`, `nbf`, `aud`, `sub`, header
safety), with the provider's `issuer` standing in for a missing `iss`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

from authz.errors import TokenRejected
from authz.identity.binding import Thumbprints
from authz.identity.introspection import Answer
from authz.identity.jwt import MAX_TOKEN_BYTES, KeyWait, check_claims
from authz.identity.lookup import find_token
from authz.identity.sources.bearer import introspected_by
from authz.model import EndUser, Identity, Request, TokenCheck, TokenUse
from authz.policy.language.spec import Authentication, IntrospectionProvider, JwtProvider

__all__ = ["Introspection", "IntrospectionSource", "user_of"]


class Introspection(Protocol):
    """Answers for tokens (`authz.identity.introspection.Introspector`; the authoring tools
    pass the answers a test case gives)."""

    def answer(self, provider: IntrospectionProvider, token: str, wait: KeyWait) -> Answer:
        """Raises IntrospectionUnavailable, or KeysPending with `wait=KeyWait.DEFER`."""


class IntrospectionSource:
    """Opaque tokens checked at the providers' endpoints."""

    name = "introspection"

    def __init__(self, introspection: Introspection, thumbprints: Thumbprints) -> None:
        self.introspection = introspection
        self._thumbprints = thumbprints

    def named_by(self, auth: Authentication) -> bool:
        return bool(auth.introspection_providers)

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        """Raises TokenRejected (401 `token_inactive`, `jwt_*` for claims that do not hold,
        `token_not_bound`), IntrospectionUnavailable (503), KeysPending with DEFER."""
        found = find_token(request, auth.token_providers)
        if found is None:
            return None
        index = introspected_by(auth, found.token, found.locations)
        if index is None:
            return None  # a JWT: the JWT source judges it
        if len(found.token) > MAX_TOKEN_BYTES:
            raise TokenRejected("the token is too large", reason="jwt_malformed")
        provider = auth.introspection_providers[index]
        started = time.time_ns()
        answer = self.introspection.answer(provider, found.token, wait)
        if not answer.active:
            raise TokenRejected("the token is not active", reason="token_inactive")
        user = user_of(answer, provider, now)
        check = TokenCheck(answer.cached, started, time.time_ns() - started, "introspection")
        if provider.certificate_bound:
            self._thumbprints.check(user.claims, request)
        token = TokenUse(len(auth.jwt_providers) + index, found.location)
        return Identity(user=dataclasses.replace(user, token_check=check), token=token)

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        # A decision may not outlive the answer it was made with (revocation): not cached;
        # the answer cache makes a repeated token cheap instead.
        return None

    def state(self, auth: Authentication) -> tuple[object, ...]:
        return ()


def user_of(answer: Answer, provider: IntrospectionProvider, now: float) -> EndUser:
    """The end user of an active answer: its members checked as a JWT's claims."""
    claims = dict(answer.claims)
    issuer = claims.setdefault("iss", provider.issuer)
    if not isinstance(issuer, str) or not issuer:
        raise TokenRejected("the answer's iss is not a string", reason="jwt_malformed")
    as_jwt = JwtProvider(issuer=issuer, audiences=provider.audiences)
    return check_claims(claims, as_jwt, now)
