"""`ssl.SSLContext`s for the listeners served by Python's ssl (the admin endpoint), rebuilt
when `ServingCertificates` holds new material, for the next connection."""

from __future__ import annotations

import ssl
import threading

from authz.tls.certs import ServingCertificates
from authz.tls.copies import PrivateCopies
from authz.tls.material import Material

# TLS 1.3 suites are all AEAD; for 1.2, forward-secret AEAD suites only (Mozilla "intermediate").
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(material: Material, copies: PrivateCopies) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving `material` (and requiring a client certificate from
    its client CAs, when it has them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    files = copies.write(material)
    try:
        context.load_cert_chain(files.cert, files.key)
    finally:
        copies.remove(files)  # loaded into memory: the copy is not needed any more
    if material.client_ca_pem is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=material.client_ca_pem.decode("ascii", "replace"))
    return context


class RotatingContext:
    """The context of `listener`'s current material; `get()` is called at each connection."""

    def __init__(self, certificates: ServingCertificates, listener: str) -> None:
        self.listener = listener
        self._certificates = certificates
        self._copies = PrivateCopies()
        self._lock = threading.Lock()
        self._built: tuple[Material, ssl.SSLContext] | None = None

    def get(self) -> ssl.SSLContext:
        material = self._certificates.current(self.listener)
        with self._lock:
            if self._built is None or self._built[0] is not material:
                self._built = (material, server_context(material, self._copies))
            return self._built[1]

    def refused(self) -> None:
        self._certificates.refused(self.listener, "handshake")

    def close(self) -> None:
        self._copies.close()
