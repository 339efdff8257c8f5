"""Workload identity from the peer: Envoy's principal, a verified certificate, XFCC."""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.config import Settings
from authz.errors import WorkloadRejected
from authz.identity import KeyRegistry, parse_xfcc
from authz.identity.peer import PeerIdentifier, XfccError
from authz.identity.sources import ServiceResolver
from authz.policy.language.spec import Authentication

from .conftest import NOW, request

DAY = datetime.timedelta(days=1)
AT = datetime.datetime.fromtimestamp(NOW, tz=datetime.UTC)
SPIFFE = "spiffe://cluster.local/ns/shop/sa/frontend"


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def make_ca(name: str = "test ca", *, issuer: Ca | None = None) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - 30 * DAY)
        .not_valid_after(AT + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return Ca(key, builder.sign(signer, hashes.SHA256()))


def make_leaf(
    ca: Ca,
    *,
    uri: str | None = SPIFFE,
    dns: str | None = None,
    not_before: datetime.datetime = AT - DAY,
    not_after: datetime.datetime = AT + DAY,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "workload")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = []
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    if dns:
        names.append(x509.DNSName(dns))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def envoy_pem(*certs: x509.Certificate) -> str:
    """What Envoy sends in attributes.source.certificate: URL-encoded PEM."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return urllib.parse.quote(pem.decode(), safe="")


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


@pytest.fixture
def identifier(ca: Ca) -> PeerIdentifier:
    return PeerIdentifier(Settings(ca_bundle=ca.pem().decode()))


# -- Envoy's principal -------------------------------------------------------------------------


def test_envoy_principal_is_used() -> None:
    identifier = PeerIdentifier(Settings())
    workload = identifier.workload(request(peer_principal=SPIFFE), None, NOW)
    assert workload is not None and workload.namespace == "shop"
    assert identifier.workload(request(), None, NOW) is None


def test_envoy_principal_outside_trust_domain() -> None:
    identifier = PeerIdentifier(Settings())
    assert identifier.workload(request(peer_principal=SPIFFE), frozenset({"other.td"}), NOW) is None


# -- certificates verified against the CA bundle ----------------------------------------------


def test_good_certificate(ca: Ca, identifier: PeerIdentifier) -> None:
    req = request(
        peer_certificate=envoy_pem(make_leaf(ca)), peer_principal="spiffe://liar/ns/x/sa/y"
    )
    workload = identifier.workload(req, frozenset({"cluster.local"}), NOW)
    # The principal comes from the verified certificate, not from anything else.
    assert workload is not None and workload.principal == SPIFFE
    assert workload.service_account == "frontend"


def test_certificate_dns_san_when_no_uri(ca: Ca, identifier: PeerIdentifier) -> None:
    req = request(peer_certificate=envoy_pem(make_leaf(ca, uri=None, dns="frontend.shop.svc")))
    assert identifier.principal(req, NOW) == "frontend.shop.svc"


def test_certificate_through_intermediate(ca: Ca, identifier: PeerIdentifier) -> None:
    intermediate = make_ca("intermediate", issuer=ca)
    req = request(peer_certificate=envoy_pem(make_leaf(intermediate), intermediate.cert))
    assert identifier.principal(req, NOW) == SPIFFE


def test_ca_bundle_from_file(ca: Ca, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.pem())
    identifier = PeerIdentifier(Settings(ca_bundle=str(bundle)))
    assert identifier.principal(request(peer_certificate=envoy_pem(make_leaf(ca))), NOW) == SPIFFE


@pytest.mark.parametrize(
    "case",
    ["expired", "not_yet_valid", "wrong_ca", "no_san", "garbage", "self_signed_leaf"],
)
def test_bad_certificates_are_rejected(ca: Ca, identifier: PeerIdentifier, case: str) -> None:
    if case == "expired":
        pem = envoy_pem(make_leaf(ca, not_before=AT - 10 * DAY, not_after=AT - DAY))
    elif case == "not_yet_valid":
        pem = envoy_pem(make_leaf(ca, not_before=AT + DAY, not_after=AT + 10 * DAY))
    elif case == "wrong_ca":
        pem = envoy_pem(make_leaf(make_ca("other ca")))
    elif case == "no_san":
        pem = envoy_pem(make_leaf(ca, uri=None))
    elif case == "garbage":
        pem = "-----BEGIN%20CERTIFICATE-----%0Anope%0A-----END%20CERTIFICATE-----"
    else:
        pem = envoy_pem(make_ca("impostor").cert)
    req = request(peer_certificate=pem, peer_principal=SPIFFE)
    with pytest.raises(WorkloadRejected) as caught:
        identifier.workload(req, None, NOW)
    assert caught.value.status == 403


def test_cached_certificate_still_checked_for_validity(ca: Ca, identifier: PeerIdentifier) -> None:
    leaf = make_leaf(ca, not_after=AT + DAY)
    req = request(peer_certificate=envoy_pem(leaf))
    assert identifier.principal(req, NOW) == SPIFFE
    assert identifier.principal(req, NOW + 60) == SPIFFE  # cached
    with pytest.raises(WorkloadRejected):
        identifier.principal(req, NOW + 2 * 86400)  # cached entry past not_after


def test_certificate_ignored_without_ca_bundle(ca: Ca) -> None:
    # Without a bundle Envoy's own principal is what counts (Envoy verified the TLS peer).
    identifier = PeerIdentifier(Settings())
    req = request(peer_certificate=envoy_pem(make_leaf(make_ca("other"))), peer_principal=SPIFFE)
    assert identifier.principal(req, NOW) == SPIFFE


def test_resolver_raises_workload_rejected(ca: Ca) -> None:
    keys = KeyRegistry()
    try:
        resolver = ServiceResolver(Settings(ca_bundle=ca.pem().decode()), keys)
        req = request(peer_certificate=envoy_pem(make_leaf(make_ca("other"))))
        with pytest.raises(WorkloadRejected):
            resolver.resolve(req, Authentication(), NOW)
    finally:
        keys.close()


# -- x-forwarded-client-cert -------------------------------------------------------------------

XFCC = (
    "By=spiffe://cluster.local/ns/edge/sa/gw;Hash=abc;URI=spiffe://cluster.local/ns/outer/sa/client,"
    "By=spiffe://cluster.local/ns/shop/sa/api;Hash=468ed33b;"
    'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=' + SPIFFE
)


def test_xfcc_parse() -> None:
    elements = parse_xfcc(XFCC)
    assert len(elements) == 2
    assert elements[0].principal() == "spiffe://cluster.local/ns/outer/sa/client"
    assert elements[1].get("subject") == "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"
    assert elements[1].principal() == SPIFFE


def test_xfcc_quoted_separators_and_escapes() -> None:
    (element,) = parse_xfcc('Subject="CN=a, O=b; c=\\"d\\"";dns=x.example;DNS=y.example')
    assert element.get("subject") == 'CN=a, O=b; c="d"'
    assert element.principal() == "x.example"  # no URI: the first DNS
    (element,) = parse_xfcc('Hash=1;Subject="CN=only"')
    assert element.principal() == "CN=only"


@pytest.mark.parametrize(
    "value", ['URI="unterminated', 'URI=a"b"', "novalue;URI=x", 'Subject="a"junk']
)
def test_xfcc_malformed(value: str) -> None:
    with pytest.raises(XfccError):
        parse_xfcc(value)


def test_xfcc_trusted_uses_last_element() -> None:
    identifier = PeerIdentifier(Settings(trust_xfcc=True))
    req = request(headers={"x-forwarded-client-cert": XFCC})
    workload = identifier.workload(req, frozenset({"cluster.local"}), NOW)
    assert workload is not None and workload.principal == SPIFFE


def test_xfcc_not_read_when_envoy_gave_a_principal() -> None:
    identifier = PeerIdentifier(Settings(trust_xfcc=True))
    req = request(
        headers={"x-forwarded-client-cert": XFCC},
        peer_principal="spiffe://cluster.local/ns/direct/sa/peer",
    )
    assert identifier.principal(req, NOW) == "spiffe://cluster.local/ns/direct/sa/peer"


def test_xfcc_untrusted_is_never_read() -> None:
    identifier = PeerIdentifier(Settings())
    req = request(headers={"x-forwarded-client-cert": XFCC})
    assert identifier.workload(req, None, NOW) is None


def test_xfcc_trusted_but_malformed_is_rejected() -> None:
    identifier = PeerIdentifier(Settings(trust_xfcc=True))
    req = request(headers={"x-forwarded-client-cert": 'URI="spiffe://cluster.local/ns/a/sa/b'})
    with pytest.raises(WorkloadRejected) as caught:
        identifier.workload(req, None, NOW)
    assert caught.value.reason == "xfcc_invalid"


@pytest.mark.parametrize(
    "bundle",
    ["/nonexistent/ca.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"],
)
def test_unusable_ca_bundle_is_a_config_error(bundle: str) -> None:
    from authz.errors import ConfigError

    with pytest.raises(ConfigError):
        PeerIdentifier(Settings(ca_bundle=bundle))
