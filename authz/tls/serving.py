"""TLS wired into the doors `authz serve` runs (authz.app): the gRPC door's credentials and
allowed-client check, and the HTTP door's files, handed to its servers at every rotation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import grpc

from authz.interceptors import PeerInterceptor
from authz.tls.certs import ServingCertificates
from authz.tls.copies import PrivateCopies
from authz.tls.grpc_tls import grpc_server_credentials, peer_permitted
from authz.tls.material import Files, Material
from authz.tls.plan import GRPC, HTTP


class TlsServers(Protocol):
    """What takes new files on the event loop (authz.http_server.HttpServers)."""

    def use_tls(self, files: Files) -> None: ...


def grpc_tls(
    certificates: ServingCertificates,
) -> tuple[grpc.ServerCredentials, list[grpc.ServerInterceptor]]:
    """The gRPC door's credentials, and the interceptor that refuses clients whose identity is
    not allowed (none without `--tls-allowed-client`)."""
    allowed = certificates.plan[GRPC].allowed
    checks: list[grpc.ServerInterceptor] = []
    if allowed is not None:
        checks.append(
            PeerInterceptor(
                lambda auth: peer_permitted(allowed, auth),
                lambda: certificates.refused(GRPC, "identity"),
            )
        )
    return grpc_server_credentials(certificates), checks


def http_tls_files(
    certificates: ServingCertificates,
    loop: asyncio.AbstractEventLoop,
    servers: Callable[[], TlsServers | None],
) -> tuple[Files, Callable[[], None]]:
    """The HTTP door's first files (private copies of the checked material) and what removes
    them at exit; every later material is copied and handed to `servers()` on `loop`."""
    copies = PrivateCopies()
    written = [copies.write(certificates.current(HTTP))]

    def rotate(material: Material) -> None:
        files = copies.write(material)
        written.append(files)
        while len(written) > 2:  # the worker still starting may read the previous copy
            copies.remove(written.pop(0))
        running = servers()
        if running is not None:
            loop.call_soon_threadsafe(running.use_tls, files)

    certificates.subscribe(HTTP, rotate)
    return written[0], copies.close
