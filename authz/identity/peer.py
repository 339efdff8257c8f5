"""Where the peer's principal comes from: Envoy's word, a certificate we verify, or XFCC.

In order (the first that applies is used, and no other is consulted):

1. `settings.ca_bundle` is set and Envoy sent `attributes.source.certificate`: the certificate
   must chain to the bundle at `now` (cryptography's X.509 client verification); its URI SAN,
   else its first DNS SAN, is the principal. A certificate that does not verify, or has no
   such SAN, raises WorkloadRejected: it never falls back to a weaker source.
2. Envoy's `attributes.source.principal` (Envoy already verified the TLS peer).
3. Only with `settings.trust_xfcc` and only when Envoy sent no principal: the last element of
   `x-forwarded-client-cert` (Envoy appends its own element last, so the last one is what the
   nearest proxy saw); URI, else DNS, else Subject, as Envoy chooses `source.principal`.
"""

from __future__ import annotations

import datetime
import sys
import urllib.parse
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import verification

from authz.config import Settings
from authz.errors import ConfigError, WorkloadRejected
from authz.identity.cache import BoundedCache, deep_bytes, text_bytes
from authz.identity.spiffe import workload_for
from authz.model import Request, Workload

__all__ = [
    "PeerCertificateVerifier",
    "PeerIdentifier",
    "XfccElement",
    "parse_xfcc",
    "xfcc_peer",
]

_MAX_CHAIN = 8
# Caches keyed by what the peer sends, bounded in bytes too (issue 10.2). A chain of _MAX_CHAIN
# ordinary certificates, URL-encoded, is well under MAX_CACHED_PEM_BYTES.
MAX_CACHED_PEM_BYTES = 64 * 1024
CERTIFICATE_CACHE_BYTES = 8 * 1024 * 1024
_MAX_CACHED_XFCC_BYTES = 16 * 1024
_XFCC_CACHE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: str
    # The whole verified chain is valid in [not_before, not_after): a cached result is reused
    # only inside that window.
    not_before: float
    not_after: float


class PeerCertificateVerifier:
    """Verifies Envoy's URL-encoded peer certificate PEM against a CA bundle.

    Results are cached by the exact PEM text (LRU, bounded in entries and bytes; a PEM over
    `MAX_CACHED_PEM_BYTES` is verified every time, never cached), so a long-lived connection's
    certificate is verified once, not on each of its requests.
    """

    def __init__(
        self,
        ca_pem: bytes,
        *,
        cache_size: int = 1024,
        cache_bytes: int = CERTIFICATE_CACHE_BYTES,
    ) -> None:
        try:
            roots = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as error:
            raise ValueError(f"CA bundle holds no usable PEM certificate: {error}") from error
        self._store = verification.Store(roots)
        self._cache: BoundedCache[str, _Verified] = BoundedCache(
            entries=cache_size, budget=cache_bytes, max_entry=MAX_CACHED_PEM_BYTES
        )

    @classmethod
    def from_setting(cls, ca_bundle: str) -> PeerCertificateVerifier:
        """`ca_bundle` is PEM text itself when it starts with `-----BEGIN`, else a file path
        (read here, at start-up, never on the request path)."""
        if ca_bundle.lstrip().startswith("-----BEGIN"):
            return cls(ca_bundle.encode())
        with open(ca_bundle, "rb") as handle:
            return cls(handle.read())

    def principal(self, encoded_pem: str, now: float) -> str:
        """The URI SAN (else first DNS SAN) of a certificate that verifies at `now`."""
        hit = self._cache.get(encoded_pem)
        if hit is not None and hit.value.not_before <= now < hit.value.not_after:
            return hit.value.principal
        verified = self._verify(encoded_pem, now)
        self._cache.put(
            encoded_pem, verified, text_bytes(encoded_pem) + text_bytes(verified.principal)
        )
        return verified.principal

    def _verify(self, encoded_pem: str, now: float) -> _Verified:
        # Envoy URL-encodes the PEM (ext_authz AttributeContext.Peer.certificate). `unquote`,
        # not `unquote_plus`: a literal "+" is part of base64.
        pem = urllib.parse.unquote(encoded_pem).encode("ascii", "replace")
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as error:
            raise WorkloadRejected("peer certificate is not a PEM certificate") from error
        if len(certs) > _MAX_CHAIN:
            raise WorkloadRejected("peer certificate chain is too long")
        leaf, intermediates = certs[0], certs[1:]
        at = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(at)
            .max_chain_depth(_MAX_CHAIN)
            .build_client_verifier()
        )
        try:
            result = verifier.verify(leaf, intermediates)
        except verification.VerificationError as error:
            raise WorkloadRejected(f"peer certificate does not verify: {error}") from error
        principal = _san_principal(result.subjects or [])
        if principal is None:
            raise WorkloadRejected("peer certificate has no URI or DNS SAN")
        chain = result.chain
        return _Verified(
            principal,
            max(c.not_valid_before_utc.timestamp() for c in chain),
            min(c.not_valid_after_utc.timestamp() for c in chain),
        )


def _san_principal(names: list[x509.GeneralName]) -> str | None:
    # Envoy's source.principal: "the URI SAN, else the DNS SAN, else the subject" (ext_authz
    # AttributeContext.Peer.principal). A verified certificate without SAN gives us nothing we
    # can match a SPIFFE or DNS rule against, so there is no subject fallback here.
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    _one_uri_san(len(uris))
    if uris:
        return str(uris[0])
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    return str(dns[0]) if dns else None


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One element of x-forwarded-client-cert (one proxy hop). Keys lower-cased."""

    pairs: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        """The first value of `key` (URI, DNS, Subject, By, Hash, ...)."""
        for name, value in self.pairs:
            if name == key.lower():
                return value
        return None

    def principal(self) -> str | None:
        """URI, else the first DNS, else Subject: the same order Envoy uses for
        `source.principal`. Raises WorkloadRejected for a certificate with several URI SANs."""
        _one_uri_san(sum(1 for name, _ in self.pairs if name == "uri"))
        return self.get("uri") or self.get("dns") or self.get("subject") or None


def _one_uri_san(count: int) -> None:
    """An X.509-SVID has exactly one URI SAN. A certificate with more is not a workload
    identity: Envoy's RBAC would match any of them, this service the first, so which SAN
    names the peer would depend on the enforcement point (docs/policy.md, "One rule for
    ambiguous requests"). Refused wherever the service sees the certificate."""
    if count > 1:
        raise WorkloadRejected("the peer certificate has more than one URI SAN")


class XfccError(ValueError):
    """An x-forwarded-client-cert value that does not follow Envoy's format."""


_xfcc_cache: BoundedCache[str, tuple[XfccElement, ...]] = BoundedCache(
    entries=1024, budget=_XFCC_CACHE_BYTES, max_entry=_MAX_CACHED_XFCC_BYTES
)


def parse_xfcc(value: str) -> tuple[XfccElement, ...]:
    """Parse Envoy's x-forwarded-client-cert header.

    Format (Envoy docs, "x-forwarded-client-cert"): elements separated by `,`, key=value pairs
    separated by `;`; a value containing `,`, `;` or `=` is double-quoted, and inside quotes a
    `"` is escaped as `\\"`. Cached (bounded in entries and bytes): a connection sends the
    same value each time.
    """
    hit = _xfcc_cache.get(value)
    if hit is not None:
        return hit.value
    elements = _parse_xfcc(value)
    # Weighed as parsed: `a=;a=;...` makes many small objects from a short text.
    size = text_bytes(value) + sum(
        sys.getsizeof(e) + deep_bytes(e.pairs, _MAX_CACHED_XFCC_BYTES) for e in elements
    )
    _xfcc_cache.put(value, elements, size)
    return elements


def _parse_xfcc(value: str) -> tuple[XfccElement, ...]:
    elements: list[XfccElement] = []
    pairs: list[tuple[str, str]] = []
    buffer: list[str] = []
    key: str | None = None
    quoted = False
    was_quoted = False
    i = 0

    def end_pair() -> None:
        nonlocal key, was_quoted
        text = "".join(buffer)
        buffer.clear()
        if key is None:
            if text.strip() or was_quoted:
                raise XfccError("pair without '='")
        else:
            name = key.strip().lower()
            if not name:
                raise XfccError("empty key")
            pairs.append((name, text if was_quoted else text.strip()))
        key = None
        was_quoted = False

    while i < len(value):
        char = value[i]
        if quoted:
            if char == "\\" and i + 1 < len(value):
                buffer.append(value[i + 1])
                i += 2
                continue
            if char == '"':
                quoted = False
            else:
                buffer.append(char)
        elif char == '"':
            if key is None or "".join(buffer).strip():
                raise XfccError("misplaced quote")
            buffer.clear()
            quoted = was_quoted = True
        elif char == "=" and key is None:
            key = "".join(buffer)
            buffer.clear()
        elif char == ";":
            end_pair()
        elif char == ",":
            end_pair()
            elements.append(XfccElement(tuple(pairs)))
            pairs = []
        else:
            if was_quoted and not char.isspace():
                raise XfccError("text after a quoted value")
            buffer.append(char)
        i += 1
    if quoted:
        raise XfccError("unterminated quote")
    end_pair()
    elements.append(XfccElement(tuple(pairs)))
    return tuple(elements)


def xfcc_peer(value: str) -> tuple[str, str]:
    """(principal, URL-encoded PEM certificate) of the last element of a trusted
    x-forwarded-client-cert: the one the nearest proxy, Envoy, appended (or the only one, with
    SANITIZE_SET). The one reader of XFCC for both doors. Raises WorkloadRejected."""
    try:
        element = parse_xfcc(value)[-1]
    except XfccError as error:
        # The operator says a trusted proxy sets this header; a value we cannot read means
        # something is wrong on the path: refuse rather than guess.
        raise WorkloadRejected(
            f"x-forwarded-client-cert is malformed: {error}", reason="xfcc_invalid"
        ) from error
    return element.principal() or "", element.get("cert") or ""


class PeerIdentifier:
    """Request -> Workload | None, by the rules in this module's docstring."""

    def __init__(self, settings: Settings) -> None:
        """Raises ConfigError when `settings.ca_bundle` cannot be read or holds no CA."""
        self._verifier: PeerCertificateVerifier | None = None
        if settings.ca_bundle:
            try:
                self._verifier = PeerCertificateVerifier.from_setting(settings.ca_bundle)
            except (OSError, ValueError) as error:
                raise ConfigError(f"ca_bundle: {error}") from error
        self._trust_xfcc = settings.trust_xfcc

    def principal(self, request: Request, now: float) -> str:
        """The verified principal of the peer, or "" when there is none."""
        if self._verifier is not None and request.peer_certificate:
            return self._verifier.principal(request.peer_certificate, now)
        if request.peer_principal:
            return request.peer_principal
        if self._trust_xfcc:
            header = request.headers.get("x-forwarded-client-cert", "")
            if header:
                return xfcc_peer(header)[0]
        return ""

    def workload(
        self, request: Request, trust_domains: frozenset[str] | None, now: float
    ) -> Workload | None:
        """The workload identity of the peer (None: unauthenticated)."""
        return workload_for(self.principal(request, now), trust_domains)
