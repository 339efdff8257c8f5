"""The end user from a JWT (docs/policy.md, "End-user identity (JWT)").

With `--jwt-authn-metadata`, claims that Envoy's jwt_authn filter verified
(`request.jwt_metadata`) are taken as the verified token when their `iss` is one of the host's
providers (audiences, `exp`/`nbf` and `sub` are still checked); no token is then verified here.
When the metadata holds no such claims, the request's token (if any) is verified as usual, so a
token that Envoy let through unverified (`allow_missing_or_failed`) is still refused, never
silently anonymous.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.errors import TokenRejected
from authz.identity.binding import Thumbprints
from authz.identity.jwt import KeyLookup, KeyWait, check_claims
from authz.identity.lookup import find_token
from authz.identity.sources.bearer import TokenVerifier, introspected_by
from authz.model import Identity, Request, TokenUse
from authz.policy.language.spec import Authentication

__all__ = ["JwtSource"]


class JwtSource:
    """Finds the token in the locations of the host's `jwt` providers and verifies it with the
    provider its `iss` names. A token that is not a JWT is left to the host's introspection
    providers when it has any (`authz.identity.sources.introspection`)."""

    name = "jwt"

    def __init__(
        self,
        verifier: TokenVerifier,
        keys: KeyLookup,
        thumbprints: Thumbprints,
        *,
        metadata: str | None,
    ) -> None:
        self.verifier = verifier
        self._keys = keys
        self._thumbprints = thumbprints
        self._metadata = metadata is not None

    def named_by(self, auth: Authentication) -> bool:
        # No provider for this host: a token is not ours to judge, the request is anonymous.
        return bool(auth.jwt_providers)

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        """Raises TokenRejected (401, `jwt_*`, `token_not_bound`), KeysPending with
        `wait=KeyWait.DEFER` when the token's kid may come with a refetch."""
        providers = auth.jwt_providers
        if self._metadata and request.jwt_metadata:
            from_envoy = _from_metadata(request.jwt_metadata, auth, now)
            if from_envoy is not None:
                self._bound(from_envoy, auth, request)
                return from_envoy
        found = find_token(request, providers)
        if found is None:
            return None
        if auth.introspection_providers:
            everywhere = find_token(request, auth.token_providers)
            if (
                everywhere is not None
                and introspected_by(auth, everywhere.token, everywhere.locations) is not None
            ):
                return None  # the introspection source judges it
        user, index = self.verifier.verify(
            found.token, providers, now, found_in=found.locations, wait=wait
        )
        identity = Identity(user=user, token=TokenUse(index, found.location))
        self._bound(identity, auth, request)
        return identity

    def _bound(self, identity: Identity, auth: Authentication, request: Request) -> None:
        # RFC 8705 section 3: a certificate-bound token is only good with its certificate.
        token, user = identity.token, identity.user
        if (
            token is not None
            and user is not None
            and auth.token_providers[token.provider].certificate_bound
        ):
            self._thumbprints.check(user.claims, request)

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        if self._metadata and request.jwt_metadata:
            return None  # Envoy's verdict on the token is not in the cache key
        if any(p.certificate_bound for p in auth.jwt_providers):
            return None  # the binding reads the client certificate
        return ()

    def state(self, auth: Authentication) -> tuple[object, ...]:
        key_set = self._keys.key_set
        return tuple([key_set(p) for p in auth.jwt_providers])


def _from_metadata(
    metadata: Mapping[str, Mapping[str, Any]], auth: Authentication, now: float
) -> Identity | None:
    # Providers in policy order, so the choice does not depend on metadata key order.
    for index, provider in enumerate(auth.jwt_providers):
        for claims in metadata.values():
            if isinstance(claims, Mapping) and claims.get("iss") == provider.issuer:
                # Envoy's jwt_authn had the token: nothing of it here to strip.
                return Identity(user=check_claims(claims, provider, now), token=TokenUse(index))
    if any(isinstance(c, Mapping) and "iss" in c for c in metadata.values()):
        # Envoy verified a token of an issuer this host does not accept.
        raise TokenRejected("the token's issuer is not accepted here", reason="jwt_unknown_issuer")
    return None
