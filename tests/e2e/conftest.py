"""Fixtures for end-to-end tests: a test PKI, an echo upstream and a factory of Envoys.

Every Envoy made by ``envoy_factory`` is stopped when the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.certs import Pki, make_pki
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.upstream import EchoUpstream


class EnvoyFactory(Protocol):
    """Signature of the ``envoy_factory`` fixture."""

    def __call__(
        self,
        authz_address: str,
        *,
        upstream: EchoUpstream | None = None,
        mtls: bool = False,
        log_level: str = "info",
        **config: Any,
    ) -> Envoy: ...


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """CA, server certificate for 127.0.0.1/localhost and SPIFFE client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    """An echo HTTP server recording what Envoy forwards to it."""
    with EchoUpstream() as server:
        yield server


@pytest.fixture
def envoy_factory(tmp_path: Path, pki: Pki, upstream: EchoUpstream) -> Iterator[EnvoyFactory]:
    """Start Envoys in front of ``authz_address`` (``host:port`` or ``unix:/path``).

    ``upstream`` defaults to the ``upstream`` fixture; ``mtls=True`` puts the test PKI's server
    certificate on the listener and requires client certificates from its CA; other keyword
    arguments are :class:`EnvoyConfig` fields (``normalize_path``, ``jwt_authn``, ...). Raises
    ``EnvoyError`` (with Envoy's log) if Envoy does not become ready.
    """
    started: list[Envoy] = []

    def factory(
        authz_address: str,
        *,
        upstream: EchoUpstream | None = None,
        mtls: bool = False,
        log_level: str = "info",
        **config: Any,
    ) -> Envoy:
        target = upstream if upstream is not None else default_upstream
        if mtls:
            config.setdefault(
                "tls", TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
            )
        envoy = Envoy(
            EnvoyConfig(
                authz_address=authz_address,
                upstream_host=target.host,
                upstream_port=target.port,
                **config,
            ),
            tmp_path / f"envoy-{len(started)}",
            log_level=log_level,
        )
        # Registered before start() so a half-started Envoy is stopped too.
        started.append(envoy)
        return envoy.start()

    default_upstream = upstream
    try:
        yield factory
    finally:
        for envoy in reversed(started):
            envoy.stop()
