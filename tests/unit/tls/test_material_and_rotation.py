"""authz.tls: a pair is checked before it is served (key, validity, PEM, size), and the
certificates in force follow their files (a `..data` flip, SIGHUP) or keep serving when the new
files are refused, with the metrics saying which."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from authz.tls.certs import ServingCertificates
from authz.tls.material import MAX_FILE_BYTES, Files, Material, MaterialError, load
from authz.tls.plan import GRPC, ListenerTls
from tests.support.certs import Pki, make_pki
from tests.support.tls_serve import CertDir, fingerprint


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_good_pair_loads_with_its_expiry_and_fingerprint(pki: Pki) -> None:
    material = load(Files(str(pki.server.cert), str(pki.server.key), str(pki.ca)), now=time.time())
    assert material.fingerprint == fingerprint(pki.server.cert.read_bytes())
    assert material.client_ca_pem == pki.ca.read_bytes()
    assert material.not_before < time.time() < material.not_after
    assert "localhost" in material.describe()


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("server.pem", "client-key.pem", "is not the key of the certificate"),
        ("client-expired.pem", "client-expired-key.pem", "expired on"),
        ("server-key.pem", "server-key.pem", "not a PEM certificate"),
        ("server.pem", "server.pem", "not an unencrypted PEM private key"),
        ("missing.pem", "server-key.pem", "No such file"),
    ],
)
def test_a_pair_that_cannot_be_served_is_refused_naming_the_file(
    pki: Pki, cert: str, key: str, message: str
) -> None:
    files = Files(str(pki.directory / cert), str(pki.directory / key))
    with pytest.raises(MaterialError, match=message):
        load(files, now=time.time())


def test_not_yet_valid_and_oversized_and_encrypted(pki: Pki, tmp_path: Path) -> None:
    future = pki.authority.issue(tmp_path, "future", common_name="f", not_yet_valid=True)
    with pytest.raises(MaterialError, match="not valid before"):
        load(Files(str(future.cert), str(future.key)), now=time.time())
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(MaterialError, match="larger than"):
        load(Files(str(big), str(pki.server.key)), now=time.time())
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(MaterialError, match="unencrypted"):
        load(Files(str(pki.server.cert), str(encrypted)), now=time.time())
    bad_ca = Files(str(pki.server.cert), str(pki.server.key), str(pki.server.key))
    with pytest.raises(MaterialError, match="not a PEM certificate"):
        load(bad_ca, now=time.time())


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_flip_is_followed_a_broken_pair_refused_and_sighup_rereads(
    pki: Pki, tmp_path: Path
) -> None:
    directory = CertDir(tmp_path / "serving", pki.server)
    plan = {GRPC: ListenerTls(GRPC, Files(directory.cert, directory.key))}
    certificates = ServingCertificates(plan)
    registry = CollectorRegistry()
    registry.register(certificates)
    certificates.load_all()
    seen: list[Material] = []
    certificates.subscribe(GRPC, seen.append)
    first = certificates.current(GRPC)
    certificates.reload()  # nothing changed: nothing loaded
    assert certificates.current(GRPC) is first and not seen
    renewed = pki.authority.issue(tmp_path, "renewed", common_name="localhost", server=True)
    directory.swap(renewed)
    certificates.reload()
    second = certificates.current(GRPC)
    assert second.fingerprint == fingerprint(renewed.cert.read_bytes()) and seen == [second]
    assert (
        _value(registry, "authz_tls_certificate_reloads_total", listener=GRPC, result="loaded") == 1
    )
    assert (
        _value(registry, "authz_tls_certificate_expiry_timestamp_seconds", listener=GRPC)
        == second.not_after
    )
    # A certificate with another pair's key: refused, counted, the renewed pair keeps serving.
    directory.swap(pki.server, key=renewed.key)
    certificates.reload()
    assert certificates.current(GRPC) is second and seen == [second]
    rejected = ("authz_tls_certificate_reloads_total", GRPC, "rejected")
    assert _value(registry, rejected[0], listener=rejected[1], result=rejected[2]) == 1
    certificates.reload()  # the same broken files are not refused again and again
    assert _value(registry, rejected[0], listener=rejected[1], result=rejected[2]) == 1
    certificates.reload(force=True)  # SIGHUP reads them again: refused again
    assert _value(registry, rejected[0], listener=rejected[1], result=rejected[2]) == 2
    # The files put right: loaded.
    directory.swap(pki.server)
    certificates.reload()
    assert certificates.current(GRPC).fingerprint == fingerprint(pki.server.cert.read_bytes())


def test_the_watcher_thread_follows_a_flip(pki: Pki, tmp_path: Path) -> None:
    directory = CertDir(tmp_path / "serving", pki.server)
    certificates = ServingCertificates(
        {GRPC: ListenerTls(GRPC, Files(directory.cert, directory.key))}
    )
    certificates.load_all()
    certificates.start(poll_seconds=0.05)
    try:
        renewed = pki.authority.issue(tmp_path, "renewed", common_name="localhost", server=True)
        directory.swap(renewed)
        deadline = time.monotonic() + 5
        expected = fingerprint(renewed.cert.read_bytes())
        while certificates.current(GRPC).fingerprint != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert certificates.current(GRPC).fingerprint == expected
    finally:
        certificates.close()


def test_an_expiring_pair_is_refused_on_reload_too(pki: Pki, tmp_path: Path) -> None:
    directory = CertDir(tmp_path / "serving", pki.server)
    now = [time.time()]
    certificates = ServingCertificates(
        {GRPC: ListenerTls(GRPC, Files(directory.cert, directory.key))}, clock=lambda: now[0]
    )
    certificates.load_all()
    first = certificates.current(GRPC)
    expired = pki.authority.issue(tmp_path, "old", common_name="localhost", expired=True)
    directory.swap(expired)
    certificates.reload()
    assert certificates.current(GRPC) is first


def test_the_certificate_in_force_expiring_is_said_once(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = CertDir(tmp_path / "serving", pki.server)
    now = [time.time()]
    certificates = ServingCertificates(
        {GRPC: ListenerTls(GRPC, Files(directory.cert, directory.key))}, clock=lambda: now[0]
    )
    certificates.load_all()
    certificates.start(poll_seconds=0.02)
    try:
        now[0] = certificates.current(GRPC).not_after + 1
        deadline = time.monotonic() + 5
        while "has expired" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
    finally:
        certificates.close()
    assert caplog.text.count("the certificate in force has expired") == 1


def test_files_rewritten_in_place_one_after_the_other(pki: Pki, tmp_path: Path) -> None:
    # SPIRE's spiffe-helper (and a hand-run `cp`) rewrite the files themselves, one at a time:
    # the half-way state (new certificate, old key) is refused, the completed one loads.
    cert, key = tmp_path / "svid.pem", tmp_path / "svid_key.pem"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    certificates = ServingCertificates({GRPC: ListenerTls(GRPC, Files(str(cert), str(key)))})
    certificates.load_all()
    first = certificates.current(GRPC)
    renewed = pki.authority.issue(tmp_path, "renewed", common_name="localhost", server=True)
    cert.write_bytes(renewed.cert.read_bytes())
    certificates.reload()
    assert certificates.current(GRPC) is first
    key.write_bytes(renewed.key.read_bytes())
    certificates.reload()
    assert certificates.current(GRPC).fingerprint == fingerprint(renewed.cert.read_bytes())
