"""Serving certificates read from files and checked before anything uses them.

A certificate file (the leaf first, then its chain), its private key and optionally the CA
bundle that verifies clients are read together, bounded, and checked: every PEM parses, the key
is the leaf's key, and the leaf is valid now. What passes is `Material`: the exact bytes the TLS
libraries get (grpcio takes bytes, granian takes paths and is given a private copy of these very
bytes), so the bytes checked are the bytes served, whatever a file holds a moment later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

# A chain of a few certificates, or a CA bundle of a few hundred, is far below this; a larger
# file is a mistake (a wrong path), refused before it is read into memory whole.
MAX_FILE_BYTES = 1024 * 1024


class MaterialError(Exception):
    """A certificate, key or CA file that cannot be served; the message names the file."""


@dataclass(frozen=True, slots=True)
class Files:
    """The files of one listener's TLS: its certificate chain and key, and the CAs of the
    client certificates it requires (None: no client certificate asked for)."""

    cert: str
    key: str
    client_ca: str | None = None

    def paths(self) -> tuple[str, ...]:
        return (
            (self.cert, self.key)
            if self.client_ca is None
            else (self.cert, self.key, self.client_ca)
        )


@dataclass(frozen=True, slots=True)
class Material:
    """A checked certificate chain, its key, and the client CA bundle (PEM bytes)."""

    files: Files
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None
    not_before: float  # Unix time
    not_after: float
    fingerprint: str  # SHA-256 of the leaf (DER), hex: what a client sees, in logs and tests
    subject: str

    def describe(self) -> str:
        expires = dt.datetime.fromtimestamp(self.not_after, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"{self.subject} (sha256 {self.fingerprint[:16]}..., expires {expires})"


def read_bounded(path: str) -> bytes:
    """The file's bytes; MaterialError when it cannot be read or is over MAX_FILE_BYTES."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise MaterialError(f"{path}: {error.strerror or error}") from error
    if len(data) > MAX_FILE_BYTES:
        raise MaterialError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def _certificates(path: str, data: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise MaterialError(f"{path}: not a PEM certificate ({error})") from error
    if not certificates:
        raise MaterialError(f"{path}: no certificate in it")
    return certificates


def _subject(cert: x509.Certificate) -> str:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: list[str] = []
    else:
        names = [
            *sans.get_values_for_type(x509.UniformResourceIdentifier),
            *sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)),
        ]
    if names:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={common[0].value!s}" if common else "(no subject)"


def load(files: Files, *, now: float) -> Material:
    """Read and check `files` (MaterialError, naming the file, for the first problem)."""
    cert_pem, key_pem = read_bounded(files.cert), read_bounded(files.key)
    leaf = _certificates(files.cert, cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        # TypeError: the key is encrypted; the service has no passphrase to give.
        raise MaterialError(f"{files.key}: not an unencrypted PEM private key ({error})") from error
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != leaf.public_key().public_bytes(*public):
        raise MaterialError(f"{files.key}: this key is not the key of the certificate {files.cert}")
    not_before = leaf.not_valid_before_utc.timestamp()
    not_after = leaf.not_valid_after_utc.timestamp()
    if now < not_before:
        raise MaterialError(
            f"{files.cert}: not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now >= not_after:
        raise MaterialError(
            f"{files.cert}: expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    client_ca_pem = None
    if files.client_ca is not None:
        client_ca_pem = read_bounded(files.client_ca)
        _certificates(files.client_ca, client_ca_pem)
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Material(
        files, cert_pem, key_pem, client_ca_pem, not_before, not_after, fingerprint, _subject(leaf)
    )
