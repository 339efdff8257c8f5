"""Request -> Identity: the sources a host's policy names, run in order, their parts joined."""

from __future__ import annotations

from collections.abc import Sequence

from authz.errors import TokenRejected
from authz.identity.jwt import KeyWait
from authz.identity.source import IdentitySource
from authz.model import ANONYMOUS, Identity, Request
from authz.policy.language.spec import Authentication

__all__ = ["IdentityResolver"]


class IdentityResolver:
    """Resolves the identity of a request with `sources` (`authz.identity.sources`). Thread-safe;
    never does network I/O on the caller's thread except the bounded wait `KeyWait` allows."""

    def __init__(self, sources: Sequence[IdentitySource]) -> None:
        self.sources = tuple(sources)

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        """What resolving reads of `request` besides the credential locations, for a decision
        cache key; None when the identity may also depend on the time or on something outside
        the request (a peer certificate verified here, claims from jwt_authn): not cached."""
        out: list[str] = []
        for source in self.sources:
            if source.named_by(auth):
                inputs = source.cache_inputs(request, auth)
                if inputs is None:
                    return None
                out.extend(inputs)
        return tuple(out)

    def key_sets(self, auth: Authentication) -> tuple[object, ...]:
        """What the sources' answers depend on beyond the request (each JWT provider's current
        key set): an identity resolved with these stays right while they stay the same."""
        # A plain loop: this runs on every cacheable check, and the nested generator it
        # replaced cost twice as much.
        out: tuple[object, ...] = ()
        for source in self.sources:
            if source.named_by(auth):
                out += source.state(auth)
        return out

    def resolve(
        self,
        request: Request,
        auth: Authentication,
        now: float,
        *,
        wait: KeyWait = KeyWait.BLOCK,
    ) -> Identity:
        """Every identity of the request. Raises the first source's refusal (TokenRejected,
        ApiKeyRejected, WorkloadRejected, IntrospectionUnavailable), or KeysPending with
        `wait=KeyWait.DEFER` when a source must wait (a JWKS refetch, an introspection)."""
        identity = ANONYMOUS
        for source in self.sources:
            if not source.named_by(auth):
                continue
            part = source.resolve(request, auth, now, wait)
            if part is not None:
                identity = _join(identity, part)
        return identity


def _join(identity: Identity, part: Identity) -> Identity:
    """`identity` with the slots `part` fills. Two sources filling one slot (a JWT and an opaque
    token both verified) is refused: which one counted would depend on the order of sources."""
    if part.user is not None and identity.user is not None:
        raise TokenRejected("more than one token", reason="jwt_malformed")
    return Identity(
        workload=part.workload or identity.workload,
        user=part.user or identity.user,
        api_key=part.api_key or identity.api_key,
        token=part.token or identity.token,
    )
