"""Identity: who is asking. The workload from the mTLS peer, the end user from a JWT.

`IdentityResolver.resolve` is the request-path entry point; `KeyRegistry` keeps every JWT
provider's keys fresh in the background so that resolving never waits on the network.
"""

from __future__ import annotations

from authz.identity.header_value import is_header_value
from authz.identity.jwks import Jwk, JwksError, KeySet, parse_jwks
from authz.identity.jwt import (
    CLOCK_SKEW_SECONDS,
    DEFAULT_ALGORITHMS,
    MAX_TOKEN_BYTES,
    JwtVerifier,
    KeyLookup,
    KeysPending,
    KeyWait,
)
from authz.identity.keys import FetchResult, KeyRegistry, Refetch
from authz.identity.peer import PeerIdentifier, parse_xfcc
from authz.identity.resolver import IdentityResolver
from authz.identity.spiffe import SpiffeId, parse_spiffe_id, workload_for

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "FetchResult",
    "IdentityResolver",
    "Jwk",
    "JwksError",
    "JwtVerifier",
    "KeyLookup",
    "KeyRegistry",
    "KeySet",
    "KeyWait",
    "KeysPending",
    "PeerIdentifier",
    "Refetch",
    "SpiffeId",
    "is_header_value",
    "parse_jwks",
    "parse_spiffe_id",
    "parse_xfcc",
    "workload_for",
]
