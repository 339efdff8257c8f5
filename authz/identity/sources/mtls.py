"""The workload identity from the mTLS peer (docs/policy.md, "Identity")."""

from __future__ import annotations

from authz.config import Settings
from authz.identity.jwt import KeyWait
from authz.identity.peer import PeerIdentifier
from authz.model import Identity, Request
from authz.policy.language.spec import Authentication

__all__ = ["PeerSource"]


class PeerSource:
    """Envoy's verified peer principal, a peer certificate verified against `--ca-bundle`, or a
    trusted XFCC element (`authz.identity.peer`), judged against the host's trust domains."""

    name = "mtls"

    def __init__(self, settings: Settings) -> None:
        """Raises ConfigError when `settings.ca_bundle` cannot be read or holds no CA."""
        self._peer = PeerIdentifier(settings)
        self._verifies_certificates = bool(settings.ca_bundle)
        self._trust_xfcc = settings.trust_xfcc

    def named_by(self, auth: Authentication) -> bool:
        # Every host: a rule may name principals without an `mtls` section.
        return True

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        workload = self._peer.workload(request, auth.trust_domains, now)
        return Identity(workload=workload) if workload is not None else None

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        if self._verifies_certificates and request.peer_certificate:
            return None  # verified against `now`: the time is an input
        if self._trust_xfcc:
            return (request.peer_principal, request.headers.get("x-forwarded-client-cert", ""))
        return (request.peer_principal,)

    def state(self, auth: Authentication) -> tuple[object, ...]:
        return ()
