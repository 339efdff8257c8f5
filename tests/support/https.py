"""A minimal HTTP/1.1 client for sending requests through Envoy, byte for byte.

``urllib`` and ``requests`` normalize or re-quote the path; these tests need to send paths
such as ``/a%2Fb``, ``/..;/x`` or ``//a`` exactly as written, so the request head is built
here by hand and written to the socket, and only the response is parsed by ``http.client``.
Transport failures (refused connection, TLS handshake alerts, resets) are raised as the
``OSError`` subclasses the standard library uses (``ssl.SSLError``, ``ConnectionError``, ...).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .certs import CertPaths

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Response:
    """A response; header names lower-cased, in the order received."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def tls_context(
    ca: Path | None, client_cert: CertPaths | None = None, *, verify: bool = True
) -> ssl.SSLContext:
    """A client TLS context trusting ``ca`` and presenting ``client_cert`` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify and ca is not None:
        context.load_verify_locations(cafile=str(ca))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(certfile=str(client_cert.cert), keyfile=str(client_cert.key))
    return context


def _header_items(headers: Headers) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def request(
    base_url: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Headers = (),
    body: bytes | None = None,
    ca: Path | None = None,
    client_cert: CertPaths | None = None,
    server_hostname: str = "localhost",
    timeout: float = 10.0,
) -> Response:
    """Send one request to ``base_url`` (``http://`` or ``https://host:port``) and read the answer.

    ``path`` goes on the request line verbatim. ``headers`` may repeat names; a ``host`` header
    given there replaces the default (``localhost``). For https, ``ca`` verifies the server
    for ``server_hostname`` (verification is off when ``ca`` is None) and ``client_cert`` is
    presented when the server asks for one. The connection is closed after the response.
    """
    if any(c in path for c in "\r\n"):
        raise ValueError("a CR or LF in the path would split the request")
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or url.hostname is None or url.port is None:
        raise ValueError(f"need http(s)://host:port, got {base_url!r}")
    items = _header_items(headers)
    names = {k.lower() for k, _ in items}
    head = [f"{method} {path} HTTP/1.1"]
    if "host" not in names:
        head.append("host: localhost")
    head += [f"{k}: {v}" for k, v in items]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        head.append(f"content-length: {len(body)}")
    if "connection" not in names:
        head.append("connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")

    sock: socket.socket = socket.create_connection((url.hostname, url.port), timeout=timeout)
    try:
        if url.scheme == "https":
            context = tls_context(ca, client_cert)
            sock = context.wrap_socket(sock, server_hostname=server_hostname)
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            payload = response.read()
        finally:
            response.close()
        return Response(
            status=response.status,
            reason=response.reason,
            headers=tuple((k.lower(), v) for k, v in response.getheaders()),
            body=payload,
        )
    finally:
        sock.close()
