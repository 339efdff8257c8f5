"""A throw-away PKI for mTLS tests: CAs, a server certificate and SPIFFE client certificates.

Keys are ECDSA P-256 because they are generated in milliseconds and Envoy (BoringSSL) and
Python's ssl both accept them. Everything is written as PEM files, because that is what Envoy's
``DownstreamTlsContext`` and ``ssl.SSLContext`` read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FRONTEND_SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/frontend"
"""The SPIFFE ID of the default client certificate of :func:`make_pki`."""

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CertPaths:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # Private keys readable by the owner only, as a real deployment would keep them.
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CertAuthority:
    """A self-signed CA that issues leaf certificates into PEM files."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._key = _new_key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    def write(self, path: Path) -> Path:
        """Write the CA certificate (not its key) to ``path`` and return it."""
        _write_cert(self.certificate, path)
        return path

    def issue(
        self,
        directory: Path,
        stem: str,
        *,
        common_name: str,
        uri_sans: Sequence[str] = (),
        dns_sans: Sequence[str] = (),
        ip_sans: Sequence[str] = (),
        server: bool = False,
        expired: bool = False,
        not_yet_valid: bool = False,
    ) -> CertPaths:
        """Issue a leaf certificate; write ``<stem>.pem`` and ``<stem>-key.pem`` in ``directory``.

        ``server`` selects the serverAuth extended key usage, otherwise clientAuth: BoringSSL
        checks the EKU of the peer's certificate. ``expired`` makes a certificate whose validity
        ended yesterday, so a verifying peer must reject it; ``not_yet_valid`` one that starts
        tomorrow.
        """
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        if expired:
            not_before, not_after = now - 10 * _ONE_DAY, now - _ONE_DAY
        elif not_yet_valid:
            not_before, not_after = now + _ONE_DAY, now + 10 * _ONE_DAY
        else:
            not_before, not_after = now - _ONE_DAY, now + 10 * _ONE_DAY
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
        names += [x509.DNSName(d) for d in dns_sans]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_sans]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            # SPIFFE (X509-SVID) says the URI SAN extension should be critical only when the
            # subject is empty; ours has a CN, so non-critical.
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        paths = CertPaths(cert=directory / f"{stem}.pem", key=directory / f"{stem}-key.pem")
        _write_cert(cert, paths.cert)
        _write_key(key, paths.key)
        return paths


@dataclass(frozen=True, slots=True)
class Pki:
    """The files of a test PKI made by :func:`make_pki`.

    ``client`` carries :data:`FRONTEND_SPIFFE_ID`; ``client_expired`` the same ID but expired;
    ``client_other_ca`` the same ID signed by a CA Envoy does not trust; ``client_no_san`` has
    only a subject CN (Envoy then reports the subject as the principal).
    """

    directory: Path
    ca: Path
    other_ca: Path
    server: CertPaths
    client: CertPaths
    client_expired: CertPaths
    client_other_ca: CertPaths
    client_no_san: CertPaths
    authority: CertAuthority = field(repr=False)

    def client_for(self, spiffe_id: str, stem: str | None = None) -> CertPaths:
        """Issue another client certificate, signed by the trusted CA, for ``spiffe_id``."""
        name = stem or "client-" + "".join(c if c.isalnum() else "_" for c in spiffe_id)
        return self.authority.issue(
            self.directory, name, common_name=spiffe_id.rsplit("/", 1)[-1], uri_sans=[spiffe_id]
        )


def make_pki(directory: Path, client_spiffe_id: str = FRONTEND_SPIFFE_ID) -> Pki:
    """Create a CA, a server certificate for 127.0.0.1/localhost and client certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertAuthority("authz-test-ca")
    other = CertAuthority("authz-untrusted-ca")
    return Pki(
        directory=directory,
        ca=ca.write(directory / "ca.pem"),
        other_ca=other.write(directory / "other-ca.pem"),
        server=ca.issue(
            directory,
            "server",
            common_name="localhost",
            dns_sans=["localhost"],
            ip_sans=["127.0.0.1"],
            server=True,
        ),
        client=ca.issue(directory, "client", common_name="frontend", uri_sans=[client_spiffe_id]),
        client_expired=ca.issue(
            directory,
            "client-expired",
            common_name="frontend",
            uri_sans=[client_spiffe_id],
            expired=True,
        ),
        client_other_ca=other.issue(
            directory, "client-other-ca", common_name="frontend", uri_sans=[client_spiffe_id]
        ),
        client_no_san=ca.issue(directory, "client-no-san", common_name="no-san-client"),
        authority=ca,
    )
