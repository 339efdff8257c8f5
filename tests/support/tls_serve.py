"""`authz serve` with TLS listeners, and the client side the TLS tests need.

    files = CertDir(tmp / "serving", pki.server)           # laid out as cert-manager writes it
    with TlsService(policies, files, pki, "--tls-client-ca", str(pki.ca)) as service:
        fingerprint_seen(service.port, pki)                # a new connection's certificate
        files.swap(new_pair)                               # the `..data` symlink flip

Everything listens on and talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from .certs import CertPaths, Pki
from .ports import LOOPBACK, free_port
from .service import ServeBase, wait_serving


class CertDir:
    """A directory as Kubernetes writes a Secret volume (cert-manager, SPIRE's helper):
    `tls.crt` and `tls.key` are links through `..data` to a timestamped directory, and an update
    is one atomic rename of `..data` to a new such directory."""

    def __init__(self, directory: Path, pair: CertPaths) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._serial = 0
        self.swap(pair)
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(f"..data/{name}")

    @property
    def cert(self) -> str:
        return str(self.directory / "tls.crt")

    @property
    def key(self) -> str:
        return str(self.directory / "tls.key")

    def swap(self, pair: CertPaths, *, key: Path | None = None) -> None:
        """Point `..data` at a new directory holding `pair` (or `pair.cert` with `key`)."""
        self._serial += 1
        target = self.directory / f"..2026_{self._serial:04d}"
        target.mkdir()
        (target / "tls.crt").write_bytes(pair.cert.read_bytes())
        (target / "tls.key").write_bytes((key or pair.key).read_bytes())
        link = self.directory / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.directory / "..data")


def fingerprint(pem_or_der: bytes) -> str:
    der = (
        ssl.PEM_cert_to_DER_cert(pem_or_der.decode()) if pem_or_der.startswith(b"-") else pem_or_der
    )
    return hashlib.sha256(der).hexdigest()


def client_context(
    pki: Pki, client: CertPaths | None, *, alpn: str = "h2", ca: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or pki.ca))
    context.check_hostname = False  # the server certificate names 127.0.0.1 and localhost
    context.set_alpn_protocols([alpn])
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def handshake(
    port: int, context: ssl.SSLContext, timeout: float = 5.0, *, settle: float = 0.5
) -> tuple[str, str | None]:
    """A new TLS connection: the server certificate's SHA-256 and the negotiated ALPN protocol.
    Raises ssl.SSLError / OSError when the server refuses (within `settle` seconds of the
    client's half of the handshake, for a refusal TLS 1.3 sends late)."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        # TLS 1.3: a refused client certificate is reported after the handshake, on read;
        # a server that accepted the client waits for its first request instead.
        tls.settimeout(settle)
        try:
            data = tls.recv(1)
        except (TimeoutError, ssl.SSLWantReadError):
            data = None
        if data == b"":
            raise ConnectionError("the server closed the connection after the handshake")
        return fingerprint(der), tls.selected_alpn_protocol()


def grpc_credentials(pki: Pki, client: CertPaths | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(pki.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
    )


def secure_channel(port: int, pki: Pki, client: CertPaths | None) -> grpc.Channel:
    return grpc.secure_channel(
        f"{LOOPBACK}:{port}",
        grpc_credentials(pki, client),
        options=[("grpc.ssl_target_name_override", "localhost")],
    )


class TlsService(ServeBase):
    """`authz serve --listen 127.0.0.1:PORT --tls-cert ... --tls-key ...` (plus `extra`),
    ready when gRPC health over mTLS with `pki.client` says SERVING."""

    RETRY_ON = ("cannot listen", "address")

    def __init__(
        self,
        policies: str | os.PathLike[str],
        files: CertDir,
        pki: Pki,
        *extra: str,
        http: bool = False,
        admin: bool = False,
        ready_timeout: float = 30.0,
    ) -> None:
        self.policies = str(policies)
        self.files, self.pki, self.extra = files, pki, extra
        self.http, self.admin = http, admin
        self.ready_timeout = ready_timeout
        self.port = self.http_port = self.admin_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    def _serve_args(self) -> list[str]:
        self.port, self.http_port, self.admin_port = free_port(), free_port(), free_port()
        args = ["--listen", f"{LOOPBACK}:{self.port}", "--tls-cert", self.files.cert]
        args += ["--tls-key", self.files.key, "--no-watch", *self.extra]
        if self.http:
            args += ["--http-listen", f"{LOOPBACK}:{self.http_port}"]
        if self.admin:
            args += ["--admin", f"{LOOPBACK}:{self.admin_port}"]
        return args

    def _wait_ready(self) -> None:
        assert self.process is not None
        channel = secure_channel(self.port, self.pki, self.pki.client)
        wait_serving(f"{LOOPBACK}:{self.port}", self.process, self.ready_timeout, self.log, channel)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def __enter__(self) -> TlsService:
        self._start_serving()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._sigterm(30.0)
        finally:
            self._kill()
            self._log.close()


def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def write_sds(directory: Path, cert: Path, key: Path, ca: Path) -> Path:
    """The SDS directory docs/operations.md describes (`authz envoy-config --authz-sds DIR`):
    authz-client.yaml with Envoy's pair and authz-ca.yaml with the service's CAs, one Secret
    each (Envoy refuses a file source holding more)."""
    secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    watched = {"path": str(cert.parent)}
    contents = {
        "authz-client": {
            "tls_certificate": {
                "certificate_chain": {"filename": str(cert)},
                "private_key": {"filename": str(key)},
                "watched_directory": watched,
            }
        },
        "authz-ca": {
            "validation_context": {
                "trusted_ca": {"filename": str(ca)},
                "watched_directory": watched,
            }
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        resource = {"@type": secret, "name": name, **content}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({"resources": [resource]}))
    return directory
