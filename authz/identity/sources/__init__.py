"""The identity sources the service runs, one module each (`authz.identity.source`).

`ServiceResolver` is the one place that lists them: a new kind of credential is a new module
here, one line below, and its declarations in the policy language.
"""

from __future__ import annotations

from collections.abc import Callable

from authz.config import Settings
from authz.identity.apikeys import key_hash
from authz.identity.binding import Thumbprints
from authz.identity.introspection import Introspector
from authz.identity.jwt import TOKEN_CACHE_BYTES, JwtVerifier, KeyLookup
from authz.identity.resolver import IdentityResolver
from authz.identity.source import IdentitySource
from authz.identity.sources.api_key import ApiKeySource
from authz.identity.sources.bearer import TokenVerifier
from authz.identity.sources.introspection import Introspection, IntrospectionSource
from authz.identity.sources.jwt import JwtSource
from authz.identity.sources.mtls import PeerSource

__all__ = [
    "ApiKeySource",
    "IntrospectionSource",
    "JwtSource",
    "PeerSource",
    "ServiceResolver",
]


class ServiceResolver(IdentityResolver):
    """The resolver of a service configured by `settings`: the workload from the peer, the end
    user from a JWT or from an introspected opaque token, the API key, in that order.

    `verifier` (default: a `JwtVerifier` on `keys` with the given cache bounds), `introspection`
    (default: an `Introspector` with the system's TLS trust) and `digest` are the authoring
    tools' seams: they pass a verifier that trusts the claims they are given, the introspection
    answers they are given and a digest that knows the keys they are given
    (`authz.authoring.given`)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        *,
        verifier: TokenVerifier | None = None,
        digest: Callable[[str], str] = key_hash,
        introspection: Introspection | None = None,
        thumbprints: Thumbprints | None = None,
        extra: tuple[IdentitySource, ...] = (),
        token_cache_size: int = 10_000,
        token_cache_bytes: int = TOKEN_CACHE_BYTES,
        token_cache_ttl: float = 300.0,
    ) -> None:
        self.verifier = verifier or JwtVerifier(
            keys,
            cache_size=token_cache_size,
            cache_bytes=token_cache_bytes,
            cache_ttl=token_cache_ttl,
        )
        self.introspection = introspection or Introspector()
        thumbprints = thumbprints or Thumbprints(trust_xfcc=settings.trust_xfcc)
        super().__init__(
            (
                PeerSource(settings),
                JwtSource(self.verifier, keys, thumbprints, metadata=settings.jwt_authn_metadata),
                IntrospectionSource(self.introspection, thumbprints),
                ApiKeySource(digest),
                *extra,
            )
        )
