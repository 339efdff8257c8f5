"""The e2e harness proven on its own: a real Envoy, a tiny in-test ext_authz server, an echo app.

The ext_authz server here is deliberately not our service: it is built from envoy-data-plane's
generated classes, allows paths starting with ``/allow`` and denies the rest with 403, so a
failure here is a harness (or Envoy config) problem, never a policy problem.
"""

from __future__ import annotations

import ssl
import tempfile
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

# envoy-data-plane's generated code trips pydantic deprecation warnings at import; they are
# not ours to fix and would bury the test output.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.core.v3 import HeaderValue, HeaderValueOption
    from envoy_data_plane.envoy.service.auth.v3 import (
        CheckRequest,
        CheckResponse,
        DeniedHttpResponse,
        OkHttpResponse,
    )
    from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
    from envoy_data_plane.google.protobuf import Struct, Value
    from envoy_data_plane.google.rpc import Status

from tests.support import https
from tests.support.certs import FRONTEND_SPIFFE_ID, Pki
from tests.support.ports import free_port
from tests.support.upstream import EchoUpstream

from .conftest import EnvoyFactory

pytestmark = pytest.mark.e2e

_CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
_GRPC_OK = 0
_GRPC_PERMISSION_DENIED = 7


class FakeAuthz:
    """A minimal ext_authz v3 gRPC server that records every CheckRequest it gets."""

    def __init__(self, address: str = "127.0.0.1:0") -> None:
        self._lock = threading.Lock()
        self._checks: list[CheckRequest] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._check,
                    request_deserializer=CheckRequest.parse,
                    response_serializer=bytes,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        bound = self._server.add_insecure_port(address)
        if address.startswith("unix:"):
            self.address = address
        else:
            if bound == 0:
                raise RuntimeError(f"could not bind {address}")
            self.address = f"{address.rpartition(':')[0]}:{bound}"

    @property
    def checks(self) -> list[CheckRequest]:
        with self._lock:
            return list(self._checks)

    def _check(self, request: CheckRequest, context: grpc.ServicerContext) -> CheckResponse:
        with self._lock:
            self._checks.append(request)
        path = request.attributes.request.http.path  # type: ignore[union-attr]
        reason = "allow-prefix" if path.startswith("/allow") else "deny"
        metadata = Struct(
            fields={
                "decision_id": Value(string_value=f"d-{len(self._checks)}"),
                "reason": Value(string_value=reason),
            }
        )
        if path.startswith("/allow"):
            return CheckResponse(
                status=Status(code=_GRPC_OK),
                ok_response=OkHttpResponse(
                    headers=[HeaderValueOption(header=HeaderValue(key="x-fake-authz", value="ok"))]
                ),
                dynamic_metadata=metadata,
            )
        return CheckResponse(
            status=Status(code=_GRPC_PERMISSION_DENIED),
            denied_response=DeniedHttpResponse(
                status=HttpStatus(code=StatusCode.Forbidden),
                headers=[
                    HeaderValueOption(header=HeaderValue(key="content-type", value="text/plain"))
                ],
                body="denied by fake authz",
            ),
            dynamic_metadata=metadata,
        )

    def start(self) -> FakeAuthz:
        self._server.start()
        return self

    def stop(self) -> None:
        # grace=None: cancel in-flight RPCs now; wait bounded for the threads to finish.
        self._server.stop(grace=None).wait(timeout=5)

    def __enter__(self) -> FakeAuthz:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def authz() -> Iterator[FakeAuthz]:
    with FakeAuthz() as server:
        yield server


def _path_seen(authz: FakeAuthz) -> str:
    return authz.checks[-1].attributes.request.http.path  # type: ignore[union-attr]


def test_plain_http_allows_and_denies(
    authz: FakeAuthz, upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    envoy = envoy_factory(authz.address)

    allowed = https.request(envoy.url, "/allow/items?x=1", headers={"x-client": "c1"})
    assert allowed.status == 200, envoy.describe()
    echoed = allowed.json()
    assert echoed["path"] == "/allow/items?x=1"
    assert echoed["headers"]["x-client"] == "c1"
    # The header the authz server added reached the upstream.
    assert upstream.requests[-1].header("x-fake-authz") == "ok"

    denied = https.request(envoy.url, "/secret")
    assert denied.status == 403, envoy.describe()
    assert denied.text == "denied by fake authz"
    assert [r.path for r in upstream.requests] == ["/allow/items?x=1"]
    assert [c.attributes.request.http.path for c in authz.checks] == [  # type: ignore[union-attr]
        "/allow/items?x=1",
        "/secret",
    ]

    # The access log shows the dynamic metadata the authz server returned.
    entries = envoy.access_log(at_least=2)
    assert [(e["path"], e["status"], e["decision_id"], e["reason"]) for e in entries] == [
        ("/allow/items?x=1", 200, "d-1", "allow-prefix"),
        ("/secret", 403, "d-2", "deny"),
    ]


def test_mtls_passes_spiffe_principal_to_authz(
    authz: FakeAuthz, upstream: EchoUpstream, envoy_factory: EnvoyFactory, pki: Pki
) -> None:
    envoy = envoy_factory(authz.address, mtls=True)
    assert envoy.url.startswith("https://")

    response = https.request(envoy.url, "/allow/x", ca=pki.ca, client_cert=pki.client)
    assert response.status == 200, envoy.describe()
    source = authz.checks[-1].attributes.source  # type: ignore[union-attr]
    assert source is not None
    assert source.principal == FRONTEND_SPIFFE_ID
    # include_peer_certificate: the URL-encoded PEM of the client certificate.
    assert urllib.parse.unquote(source.certificate).strip() == pki.client.cert.read_text().strip()

    denied = https.request(envoy.url, "/other", ca=pki.ca, client_cert=pki.client)
    assert denied.status == 403


def test_mtls_principal_falls_back_to_subject_without_san(
    authz: FakeAuthz, envoy_factory: EnvoyFactory, pki: Pki
) -> None:
    envoy = envoy_factory(authz.address, mtls=True)
    response = https.request(envoy.url, "/allow/x", ca=pki.ca, client_cert=pki.client_no_san)
    assert response.status == 200, envoy.describe()
    principal = authz.checks[-1].attributes.source.principal  # type: ignore[union-attr]
    assert "no-san-client" in principal
    assert not principal.startswith("spiffe://")


def test_mtls_listener_refuses_bad_or_missing_client_certs(
    authz: FakeAuthz, upstream: EchoUpstream, envoy_factory: EnvoyFactory, pki: Pki
) -> None:
    envoy = envoy_factory(authz.address, mtls=True)
    # The listener works with a good certificate, so the failures below are the TLS checks.
    assert https.request(envoy.url, "/allow/ok", ca=pki.ca, client_cert=pki.client).status == 200

    for cert in (None, pki.client_other_ca, pki.client_expired):
        # With TLS 1.3 the server's rejection arrives after the client's handshake returns,
        # so it surfaces as a TLS alert or a closed connection while reading the answer.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https.request(envoy.url, "/allow/nope", ca=pki.ca, client_cert=cert, timeout=5)

    assert [r.path for r in upstream.requests] == ["/allow/ok"]
    assert len(authz.checks) == 1


def test_fails_closed_when_authz_goes_away(
    upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    server = FakeAuthz().start()
    try:
        envoy = envoy_factory(server.address)
        assert https.request(envoy.url, "/allow/before").status == 200, envoy.describe()
    finally:
        server.stop()

    after = https.request(envoy.url, "/allow/after")
    assert after.status == 503, envoy.describe()
    assert [r.path for r in upstream.requests] == ["/allow/before"]
    stats = envoy.stats("http.ingress.ext_authz.")
    assert stats["http.ingress.ext_authz.error"] >= 1
    assert stats["http.ingress.ext_authz.failure_mode_allowed"] == 0


def test_fails_closed_when_authz_never_answers(
    upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    envoy = envoy_factory(f"127.0.0.1:{free_port()}")  # nothing listens there
    response = https.request(envoy.url, "/allow/x")
    assert response.status == 503, envoy.describe()
    assert upstream.requests == []


def test_authz_over_unix_socket(upstream: EchoUpstream, envoy_factory: EnvoyFactory) -> None:
    # A short directory: unix socket paths are limited to ~107 bytes, pytest's tmp_path is long.
    with tempfile.TemporaryDirectory(prefix="authz-") as directory:
        address = f"unix:{Path(directory) / 'authz.sock'}"
        with FakeAuthz(address) as server:
            envoy = envoy_factory(server.address)
            assert https.request(envoy.url, "/allow/uds").status == 200, envoy.describe()
            assert https.request(envoy.url, "/nope").status == 403
            assert len(server.checks) == 2


RAW_PATHS = ["/a%2Fb", "/..;/x", "//a", "/allow/../secret", "/allow/%2e%2e/secret", "/a/./b"]


def test_raw_paths_reach_authz_unchanged_by_default(
    authz: FakeAuthz, envoy_factory: EnvoyFactory
) -> None:
    envoy = envoy_factory(authz.address)
    for path in RAW_PATHS:
        response = https.request(envoy.url, path)
        assert _path_seen(authz) == path, envoy.describe()
        expected = 200 if path.startswith("/allow") else 403
        assert response.status == expected, (path, envoy.describe())


def test_envoy_normalization_can_be_switched_on(
    authz: FakeAuthz, upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    envoy = envoy_factory(authz.address, normalize_path=True, merge_slashes=True)
    https.request(envoy.url, "/allow/x/../y")
    assert _path_seen(authz) == "/allow/y", envoy.describe()
    https.request(envoy.url, "//allow//z")
    assert _path_seen(authz) == "/allow/z"
    assert [r.path for r in upstream.requests] == ["/allow/y", "/allow/z"]
