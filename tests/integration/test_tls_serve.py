"""`authz serve --tls-*` as a process: mutual TLS on the gRPC door, the HTTP door and the admin
endpoint with certificates made here; clients refused at the handshake (none, another CA,
plaintext, TLS 1.1) or by identity; a start refused for a pair that cannot be served; files
rotated by a `..data` symlink flip, a broken pair refused while the old one serves."""

from __future__ import annotations

import http.client
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from tests.support.certs import FRONTEND_SPIFFE_ID, Pki, make_pki
from tests.support.ports import LOOPBACK, free_port
from tests.support.service import REPO_ROOT
from tests.support.tls_serve import (
    CertDir,
    TlsService,
    client_context,
    fingerprint,
    handshake,
    secure_channel,
    wait_until,
)

# The tests offer TLS 1.1 on purpose, to see it refused.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")

POLICY = """\
rules:
  - name: public-reads
    action: allow
    to: [{methods: [GET], paths: ["/public/{**}"]}]
"""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "p.yaml").write_text(POLICY)
    return directory


def check(channel: grpc.Channel, path: str = "/public/a") -> int:
    request = external_auth_pb2.CheckRequest()
    http_request = request.attributes.request.http
    http_request.method, http_request.path, http_request.host = "GET", path, "shop.example.com"
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
    return int(stub.Check(request, timeout=5).status.code)


def admin_metrics(port: int, context: ssl.SSLContext | None) -> str:
    scheme = "https" if context is not None else "http"
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(f"{scheme}://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


def https_get(port: int, path: str, context: ssl.SSLContext) -> int:
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=5)
    try:
        # As Envoy's http_service client sends it (authz.wire.http, envoy mode).
        headers = {"Host": "shop.example.com", "x-authz-original-path": path}
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_grpc_door_mutual_tls_refuses_every_wrong_client(
    tmp_path: Path, pki: Pki, policies: Path
) -> None:
    files = CertDir(tmp_path / "serving", pki.server)
    args = ("--tls-client-ca", str(pki.ca), "--tls-allowed-client", FRONTEND_SPIFFE_ID)
    with TlsService(policies, files, pki, *args, admin=True) as service:
        with secure_channel(service.port, pki, pki.client) as channel:
            assert check(channel) == 0
            assert check(channel, "/private") == 7  # PERMISSION_DENIED: the policy's deny
        served, alpn = handshake(service.port, client_context(pki, pki.client))
        assert served == fingerprint(pki.server.cert.read_bytes()) and alpn == "h2"
        # A client without a certificate, or with one from another CA: no answer at all.
        for client in (None, pki.client_other_ca):
            with (
                secure_channel(service.port, pki, client) as channel,
                pytest.raises(grpc.RpcError) as refused,
            ):
                check(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises((ssl.SSLError, OSError)):
                handshake(service.port, client_context(pki, client))
        # Plaintext gRPC and TLS 1.1 are refused too.
        with (
            grpc.insecure_channel(f"{LOOPBACK}:{service.port}") as channel,
            pytest.raises(grpc.RpcError) as plain,
        ):
            check(channel)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        old = client_context(pki, pki.client)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(service.port, old)
        # A certificate of the trusted CA whose identity is not allowed: refused before the
        # check runs, and counted.
        stranger = pki.client_for("spiffe://cluster.local/ns/other/sa/intruder")
        with (
            secure_channel(service.port, pki, stranger) as channel,
            pytest.raises(grpc.RpcError) as denied,
        ):
            check(channel)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The admin endpoint serves the same certificate (no client certificate asked).
        text = admin_metrics(service.admin_port, client_context(pki, None, alpn="http/1.1"))
        refused_identity = metric(
            text, "authz_tls_refused_total", listener="grpc", reason="identity"
        )
        assert refused_identity == 1.0
        expiry = metric(text, "authz_tls_certificate_expiry_timestamp_seconds", listener="grpc")
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
        assert expiry == leaf.not_valid_after_utc.timestamp()
        # Plaintext to the TLS admin endpoint: refused at the handshake, counted.
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
            admin_metrics(service.admin_port, None)
        text = admin_metrics(service.admin_port, client_context(pki, None, alpn="http/1.1"))
        assert metric(text, "authz_tls_refused_total", listener="admin", reason="handshake") == 1


def test_http_door_and_plaintext_admin(tmp_path: Path, pki: Pki, policies: Path) -> None:
    files = CertDir(tmp_path / "serving", pki.server)
    args = ("--tls-client-ca", str(pki.ca), "--admin-plaintext")
    with TlsService(policies, files, pki, *args, http=True, admin=True) as service:
        context = client_context(pki, pki.client, alpn="http/1.1")
        assert https_get(service.http_port, "/public/a", context) == 200
        assert https_get(service.http_port, "/private", context) == 403
        for client in (None, pki.client_other_ca):
            with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
                https_get(service.http_port, "/public/a", client_context(pki, client))
        old = client_context(pki, pki.client, alpn="http/1.1")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)):
            handshake(service.http_port, old)
        with pytest.raises(OSError):  # plaintext HTTP to the TLS door gets no answer
            plain = http.client.HTTPConnection(LOOPBACK, service.http_port, timeout=5)
            try:
                plain.request("GET", "/public/a", headers={"x-authz-original-path": "/public/a"})
                status = plain.getresponse().status
            except http.client.HTTPException as error:
                raise OSError(str(error)) from error
            finally:
                plain.close()
            assert status not in (200, 403), status
        # The probes and /metrics stay plaintext when the operator says so.
        assert "authz_tls_certificate_expiry_timestamp_seconds" in admin_metrics(
            service.admin_port, None
        )


def test_rotation_by_symlink_flip(tmp_path: Path, pki: Pki, policies: Path) -> None:
    files = CertDir(tmp_path / "serving", pki.server)
    args = ("--tls-client-ca", str(pki.ca))
    with TlsService(policies, files, pki, *args, http=True, admin=True) as service:
        first = fingerprint(pki.server.cert.read_bytes())
        with secure_channel(service.port, pki, pki.client) as kept:
            assert check(kept) == 0
            renewed = pki.authority.issue(
                tmp_path / "pki", "server-2", common_name="localhost",
                dns_sans=["localhost"], ip_sans=["127.0.0.1"], server=True,
            )  # fmt: skip
            files.swap(renewed)
            second = fingerprint(renewed.cert.read_bytes())

            def everywhere(expected: str) -> bool:
                return all(
                    handshake(port, client_context(pki, pki.client, alpn=alpn), settle=0.05)[0]
                    == expected
                    for port, alpn in (
                        (service.port, "h2"),
                        (service.http_port, "http/1.1"),
                        (service.admin_port, "http/1.1"),
                    )
                )

            def settled() -> bool:
                try:
                    return everywhere(second)
                except OSError:  # a connection to the HTTP door's old worker, closed as it stops
                    return False

            assert wait_until(settled, timeout=15), service.log()[-2000:]
            # The HTTP door's old worker stops accepting once its replacement runs
            # (authz.http_server.RESPAWN_SECONDS); from then on only the new pair is served.
            time.sleep(1.5)
            assert all(everywhere(second) for _ in range(3))
            assert check(kept) == 0  # the connection opened before the flip still works
        # A key that is not the certificate's: refused, logged and counted; the pair in force
        # keeps serving, through SIGHUP too.
        files.swap(pki.server, key=pki.client.key)
        service.signal(signal.SIGHUP)
        context = client_context(pki, None, alpn="http/1.1")
        assert wait_until(
            lambda: (
                (
                    metric(
                        admin_metrics(service.admin_port, context),
                        "authz_tls_certificate_reloads_total",
                        listener="grpc",
                        result="rejected",
                    )
                    or 0
                )
                >= 1
            ),
            timeout=10,
        )
        assert everywhere(second) and first != second
        text = admin_metrics(service.admin_port, context)
        assert (
            metric(text, "authz_tls_certificate_reloads_total", listener="http", result="loaded")
            == 1
        )
        assert (
            "keeps serving" in service.log()
            and "is not the key of the certificate" in service.log()
        )
        with secure_channel(service.port, pki, pki.client) as channel:
            assert check(channel) == 0


@pytest.mark.parametrize("problem", ["expired", "not_yet_valid", "wrong_key"])
def test_start_refuses_a_pair_it_cannot_serve(
    tmp_path: Path, pki: Pki, policies: Path, problem: str
) -> None:
    issued = pki.authority.issue(
        tmp_path / "pki", f"bad-{problem}", common_name="localhost", server=True,
        expired=problem == "expired", not_yet_valid=problem == "not_yet_valid",
    )  # fmt: skip
    key = pki.client.key if problem == "wrong_key" else issued.key
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--policies", str(policies),
         "--listen", f"{LOOPBACK}:{free_port()}", "--tls-cert", str(issued.cert),
         "--tls-key", str(key)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = {
        "expired": "expired on",
        "not_yet_valid": "not valid before",
        "wrong_key": "is not the key of the certificate",
    }[problem]
    (last,) = [text for text in result.stderr.splitlines() if text.startswith("authz:")]
    assert line in last and "grpc listener" in last


def test_workers_supervisor_refuses_an_expired_pair_before_starting_any(
    tmp_path: Path, pki: Pki, policies: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--policies", str(policies),
         "--listen", f"{LOOPBACK}:{free_port()}", "--workers", "2",
         "--tls-cert", str(pki.client_expired.cert), "--tls-key", str(pki.client_expired.key)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "expired on" in result.stderr and "[worker" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_only_tls12_aead_suites_and_tls13_on_every_listener(
    tmp_path: Path, pki: Pki, policies: Path
) -> None:
    files = CertDir(tmp_path / "serving", pki.server)
    with TlsService(policies, files, pki, http=True, admin=True) as service:
        doors = ((service.port, "h2"), (service.http_port, "http/1.1"))
        for port, alpn in (*doors, (service.admin_port, "http/1.1")):
            modern = client_context(pki, None, alpn=alpn)
            modern.maximum_version = ssl.TLSVersion.TLSv1_2
            modern.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
            handshake(port, modern)  # TLS 1.2 with an AEAD suite: served
            weak = client_context(pki, None, alpn=alpn)
            weak.maximum_version = ssl.TLSVersion.TLSv1_2
            weak.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC, no AEAD: refused
            with pytest.raises((ssl.SSLError, OSError)):
                handshake(port, weak)


def test_admin_endpoint_with_its_own_client_ca(tmp_path: Path, pki: Pki, policies: Path) -> None:
    files = CertDir(tmp_path / "serving", pki.server)
    args = ("--admin-tls-client-ca", str(pki.ca))
    with TlsService(policies, files, pki, *args, admin=True) as service:
        scraper = client_context(pki, pki.client, alpn="http/1.1")
        assert "authz_tls_refused_total" in admin_metrics(service.admin_port, scraper)
        for client in (None, pki.client_other_ca):
            with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
                admin_metrics(service.admin_port, client_context(pki, client, alpn="http/1.1"))
        text = admin_metrics(service.admin_port, scraper)
        assert metric(text, "authz_tls_refused_total", listener="admin", reason="handshake") == 2
