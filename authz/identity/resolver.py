"""Request -> Identity: the workload from the peer, the end user from a JWT, the API key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.config import Settings
from authz.errors import TokenRejected
from authz.identity.apikeys import find_api_key
from authz.identity.jwt import (
    TOKEN_CACHE_BYTES,
    JwtVerifier,
    KeyLookup,
    KeyWait,
    check_claims,
)
from authz.identity.lookup import find_token
from authz.identity.peer import PeerIdentifier
from authz.model import ANONYMOUS, EndUser, Identity, Request, TokenUse
from authz.policy.spec import Authentication

__all__ = ["IdentityResolver"]


class IdentityResolver:
    """Resolves both identities of a request. Thread-safe; never does network I/O (the one wait
    is for a key refetch, bounded, see `KeyWait`).

    With `settings.jwt_authn_metadata` set, claims that Envoy's jwt_authn filter verified
    (`request.jwt_metadata`) are taken as the verified token when their `iss` is one of the
    host's providers (audiences, `exp`/`nbf` and `sub` are still checked); no token is then
    verified here. When the metadata holds no such claims, the request's token (if any) is
    verified as usual, so a token that Envoy let through unverified (`allow_missing_or_failed`)
    is still refused, never silently anonymous.
    """

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        *,
        token_cache_size: int = 10_000,
        token_cache_bytes: int = TOKEN_CACHE_BYTES,
        token_cache_ttl: float = 300.0,
    ) -> None:
        self._peer = PeerIdentifier(settings)
        self._metadata = settings.jwt_authn_metadata is not None
        self._verifies_certificates = bool(settings.ca_bundle)
        self._trust_xfcc = settings.trust_xfcc
        self._keys = keys
        self.verifier = JwtVerifier(
            keys,
            cache_size=token_cache_size,
            cache_bytes=token_cache_bytes,
            cache_ttl=token_cache_ttl,
        )

    def cache_inputs(self, request: Request) -> tuple[str, ...] | None:
        """What `resolve` reads of `request` besides the token's locations, for a decision
        cache key; None when the identity may also depend on the time or on Envoy's metadata
        (a peer certificate verified here, claims from jwt_authn): such checks are not cached."""
        if self._verifies_certificates and request.peer_certificate:
            return None
        if self._metadata and request.jwt_metadata:
            return None
        if self._trust_xfcc:
            return (request.peer_principal, request.headers.get("x-forwarded-client-cert", ""))
        return (request.peer_principal,)

    def key_sets(self, auth: Authentication) -> tuple[object, ...]:
        """The current key set of each of `auth`'s providers: an identity resolved with these
        stays right while every one of them is the same."""
        key_set = self._keys.key_set
        return tuple([key_set(p) for p in auth.jwt_providers])

    def resolve(
        self,
        request: Request,
        auth: Authentication,
        now: float,
        *,
        wait: KeyWait = KeyWait.BLOCK,
    ) -> Identity:
        """Workload from the peer, end user from a JWT.

        Raises TokenRejected (401, reason `jwt_*`) when a token is present but fails
        verification, WorkloadRejected when a given peer certificate (or trusted XFCC) fails,
        KeysPending (with `wait=KeyWait.DEFER`) when the token's kid may come with a refetch.
        """
        workload = self._peer.workload(request, auth.trust_domains, now)
        user, token = self._end_user(request, auth, now, wait)
        # Raises ApiKeyRejected (401 `api_key_invalid`) for a presented key nobody knows.
        api_key = find_api_key(request, auth.api_key_providers) if auth.api_key_providers else None
        if workload is None and user is None and api_key is None:
            return ANONYMOUS
        return Identity(workload=workload, user=user, api_key=api_key, token=token)

    def _end_user(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> tuple[EndUser | None, TokenUse | None]:
        providers = auth.jwt_providers
        if not providers:
            # No provider for this host: a token is not ours to judge, the request is anonymous.
            return None, None
        if self._metadata and request.jwt_metadata:
            from_envoy = _from_metadata(request.jwt_metadata, auth, now)
            if from_envoy is not None:
                return from_envoy
        found = find_token(request, providers)
        if found is None:
            return None, None
        user, index = self.verifier.verify(
            found.token, providers, now, found_in=found.locations, wait=wait
        )
        return user, TokenUse(index, found.location)


def _from_metadata(
    metadata: Mapping[str, Mapping[str, Any]], auth: Authentication, now: float
) -> tuple[EndUser, TokenUse] | None:
    # Providers in policy order, so the choice does not depend on metadata key order.
    for index, provider in enumerate(auth.jwt_providers):
        for claims in metadata.values():
            if isinstance(claims, Mapping) and claims.get("iss") == provider.issuer:
                # Envoy's jwt_authn had the token: nothing of it here to strip.
                return check_claims(claims, provider, now), TokenUse(index)
    if any(isinstance(c, Mapping) and "iss" in c for c in metadata.values()):
        # Envoy verified a token of an issuer this host does not accept.
        raise TokenRejected("the token's issuer is not accepted here", reason="jwt_unknown_issuer")
    return None
