"""The validated policy-schema values the identity layer reads: JWT providers, token locations
and the authentication in force for a host (docs/policy.md, "Identity").

Plain frozen dataclasses with no imports from the rest of the package, so `authz.model` and the
identity layer can name them without pulling in the policy compiler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenLocation:
    """Where a JWT is looked for: exactly one of header, query or cookie is set."""

    header: str | None = None
    prefix: str = ""
    query: str | None = None
    cookie: str | None = None


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One `authentication.jwt` entry of a policy file, validated.

    Exactly one key source is set: `jwks_uri`, `jwks_file` (absolute path), `jwks_json` (the
    inline JWKS, serialized) or `discovery`. `algorithms` is empty for "the asymmetric default".
    """

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str | None = None
    jwks_file: str | None = None
    jwks_json: str | None = None
    discovery: bool = False
    locations: tuple[TokenLocation, ...] = (
        TokenLocation(header="authorization", prefix="Bearer "),
    )
    # As Envoy's jwt_authn (forward) and Istio's forwardOriginalToken: the token stays here.
    forward: bool = False
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    algorithms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Authentication:
    """The authentication in force for one host: the union of its applying files.

    `trust_domains` is None when no applying file restricts them.
    """

    trust_domains: frozenset[str] | None = None
    jwt_providers: tuple[JwtProvider, ...] = ()
