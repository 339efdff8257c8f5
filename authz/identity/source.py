"""The identity-source protocol: one kind of credential, one module (`authz.identity.sources`).

A source reads its part of the request view (the peer, a bearer token, an API key) and yields
the part of the `Identity` it establishes, None when the request presents nothing of its kind,
or a refusal (an `AuthzError`: 401 for a bad credential, 403 for a bad peer, 503 when the
authority behind it cannot answer). The resolver runs the sources the host's policy names and
joins their parts; nothing above it knows how many sources there are (Authorino's identity
evaluators are the model).

`Identity` keeps one slot per kind of identity the policy language names (`principals`,
`request_principals`/`issuers`/`claim`, `api_keys`), not one per source: a JWT and an
introspected opaque token are both an end user, and a rule cannot tell them apart.
"""

from __future__ import annotations

from typing import Protocol

from authz.identity.jwt import KeyWait
from authz.model import Identity, Request
from authz.policy.language.spec import Authentication

__all__ = ["IdentitySource"]


class IdentitySource(Protocol):
    """One source of identity. Implementations are thread-safe and do no network I/O on the
    calling thread except the one bounded wait `KeyWait` allows (a JWKS refetch, an
    introspection request): with `KeyWait.DEFER` they raise `KeysPending` instead of waiting."""

    name: str

    def named_by(self, auth: Authentication) -> bool:
        """Whether the host's authentication names this source (it then runs for the host)."""

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        """The part of the identity this source establishes, None when the request presents
        nothing of its kind. Raises AuthzError to refuse the request."""

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        """What `resolve` reads of `request` besides the credential locations of the host's
        providers (those are in the decision cache key already), for the decision cache key;
        None: the part may change without the request changing, do not cache the decision."""

    def state(self, auth: Authentication) -> tuple[object, ...]:
        """What the part depends on that can change between two equal requests (a provider's
        current key set): a cached decision is used only while this stays the same."""
