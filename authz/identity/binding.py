"""Certificate-bound access tokens (RFC 8705 section 3): the token's `cnf["x5t#S256"]` must be
the base64url SHA-256 thumbprint of the DER client certificate the request came with.

The certificate is Envoy's `attributes.source.certificate` (with `include_peer_certificate:
true`, which `authz envoy-config` sets), else, only where the operator trusts it, the `Hash` of
the last `x-forwarded-client-cert` element (Envoy's hex SHA-256 of the same DER bytes). A token
whose provider says `certificate_bound: true` without such a match is refused with 401
`token_not_bound`, so a stolen token is useless from another client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.errors import TokenRejected
from authz.identity.cache import BoundedCache, text_bytes
from authz.identity.peer import XfccError, parse_xfcc
from authz.model import Request

__all__ = ["Thumbprints", "thumbprint"]

XFCC = "x-forwarded-client-cert"
_MAX_PEM = 64 * 1024


def thumbprint(der: bytes) -> str:
    """RFC 8705 section 3.1: base64url (no padding) of the SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


class Thumbprints:
    """The client certificate's thumbprint of a request, and the binding check. Thread-safe;
    the thumbprint of a peer certificate is cached by its PEM text (bounded)."""

    def __init__(self, *, trust_xfcc: bool) -> None:
        self._trust_xfcc = trust_xfcc
        self._cache: BoundedCache[str, str] = BoundedCache(
            entries=1024, budget=4 * 1024 * 1024, max_entry=2 * _MAX_PEM
        )

    def of(self, request: Request) -> str | None:
        """The thumbprint of the request's client certificate, None when it has none."""
        if request.peer_certificate:
            return self._from_pem(request.peer_certificate)
        if self._trust_xfcc:
            header = request.headers.get(XFCC, "")
            if header:
                try:
                    element = parse_xfcc(header)[-1]
                except XfccError:
                    return None
                digest = element.get("Hash")
                if digest:
                    try:
                        raw = binascii.unhexlify(digest)
                    except (binascii.Error, ValueError):
                        return None
                    if len(raw) == 32:
                        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        return None

    def check(self, claims: Mapping[str, Any], request: Request) -> None:
        """Raises TokenRejected (`token_not_bound`) unless the token is bound to the request's
        client certificate."""
        cnf = claims.get("cnf")
        bound = cnf.get("x5t#S256") if isinstance(cnf, Mapping) else None
        if not isinstance(bound, str) or not bound:
            raise TokenRejected("the token is not bound to a certificate", reason="token_not_bound")
        actual = self.of(request)
        if actual is None:
            raise TokenRejected(
                "the token is bound to a client certificate; none was presented",
                reason="token_not_bound",
            )
        if not hmac.compare_digest(actual.encode(), bound.rstrip("=").encode("utf-8", "replace")):
            raise TokenRejected(
                "the token is bound to another certificate", reason="token_not_bound"
            )

    def _from_pem(self, encoded_pem: str) -> str | None:
        if len(encoded_pem) > _MAX_PEM:
            return None
        hit = self._cache.get(encoded_pem)
        if hit is not None:
            return hit.value
        try:
            # The first certificate of the URL-encoded chain is the client's own.
            leaf = x509.load_pem_x509_certificate(urllib.parse.unquote(encoded_pem).encode())
        except ValueError:
            return None
        value = thumbprint(leaf.public_bytes(Encoding.DER))
        self._cache.put(encoded_pem, value, text_bytes(encoded_pem) + 64)
        return value
