"""A real Envoy calls the service over mutual TLS, with the config `authz envoy-config
--authz-ca ...` generates, for both doors: checks answer as over plaintext; an Envoy with no
client certificate, one from another CA, or a disallowed identity gets no answer (503, never a
200); and the serving certificate is swapped by a `..data` flip during a bounded load with no
failed request. The load lasts 3 s, or the issue's 30 s with LONG_TESTS=1
(tests/support/scale.py)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.commands import envoy_config
from tests.support.certs import FRONTEND_SPIFFE_ID, CertPaths, Pki, make_pki
from tests.support.envoy import Envoy, EnvoyConfig
from tests.support.ports import LOOPBACK
from tests.support.scale import scaled
from tests.support.tls_serve import (
    CertDir,
    TlsService,
    client_context,
    fingerprint,
    handshake,
    write_sds,
)
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

SOAK_SECONDS = float(scaled(3, 30))

POLICY = """\
rules:
  - name: public-reads
    action: allow
    to: [{methods: [GET], paths: ["/public/{**}"]}]
"""


def generated(*argv: str) -> dict[str, Any]:
    """The bootstrap `authz envoy-config ARGV` prints, parsed."""
    parser = argparse.ArgumentParser()
    envoy_config.configure(parser)
    loaded: dict[str, Any] = yaml.safe_load(envoy_config.build_text(parser.parse_args(argv)))
    return loaded


class GeneratedEnvoy(Envoy):
    """An Envoy running exactly what `authz envoy-config` generates for its ports."""

    def __init__(self, workdir: Path, argv: tuple[str, ...]) -> None:
        super().__init__(EnvoyConfig(authz_address="unused:0"), workdir, log_level="warning")
        self.argv = argv

    def bootstrap(self) -> dict[str, Any]:
        return generated(
            *self.argv,
            "--listen", str(self.port), "--listen-address", LOOPBACK,
            "--admin", str(self.admin_port),
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def tls_argv(pki: Pki, authz: str, client: CertPaths | None, *, http: bool) -> tuple[str, ...]:
    argv = ["--authz", authz, "--authz-ca", str(pki.ca), "--authz-san", "localhost"]
    if client is not None:
        argv += ["--authz-client-cert", str(client.cert), "--authz-client-key", str(client.key)]
    return (*argv, *(["--http"] if http else []))


def get(envoy: Envoy, path: str, connection: http.client.HTTPConnection | None = None) -> int:
    own = connection is None
    connection = connection or http.client.HTTPConnection(LOOPBACK, envoy.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "shop.example.com"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        if own:
            connection.close()


@pytest.fixture(scope="module")
def own_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_service(directory: Path, own_pki: Pki) -> Iterator[TlsService]:
    policies = directory / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(POLICY)
    files = CertDir(directory / "serving", own_pki.server)
    args = ("--tls-client-ca", str(own_pki.ca), "--tls-allowed-client", FRONTEND_SPIFFE_ID)
    # The HTTP door cannot check identities itself: its own CA (here the same one) is the
    # operator's explicit choice (authz.tls.plan).
    args += ("--http-tls-client-ca", str(own_pki.ca))
    with TlsService(policies, files, own_pki, *args, http=True, admin=True) as running:
        yield running


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory, own_pki: Pki) -> Iterator[TlsService]:
    """For the tests that only connect to the service: one per module."""
    yield from _tls_service(tmp_path_factory.mktemp("service"), own_pki)


@pytest.fixture
def service(tmp_path: Path, own_pki: Pki) -> Iterator[TlsService]:
    """For the tests that rotate the service's certificate: their own."""
    yield from _tls_service(tmp_path, own_pki)


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_envoy_over_mutual_tls_answers_and_wrong_clients_get_none(
    tmp_path: Path, own_pki: Pki, shared_service: TlsService, echo: EchoUpstream, door: str
) -> None:
    service = shared_service
    http = door == "http"
    port = service.http_port if http else service.port
    authz = f"{LOOPBACK}:{port}"
    upstream = ("--upstream", f"{LOOPBACK}:{echo.port}")
    # Health checks go through the same TLS socket: gRPC health on the gRPC door, the admin
    # endpoint's /readyz (TLS too here) for the HTTP door.
    checks = ("--readyz-port", str(service.admin_port)) if http else ()
    good = (*tls_argv(own_pki, authz, own_pki.client, http=http), *upstream, *checks)
    with GeneratedEnvoy(tmp_path / "good", good) as envoy:
        assert get(envoy, "/public/a") == 200
        assert get(envoy, "/private") == 403
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = envoy.stats("cluster.authz.health_check.")
            if stats.get("cluster.authz.health_check.success", 0) > 0:
                break
            time.sleep(0.2)
        assert stats.get("cluster.authz.health_check.success", 0) > 0, stats
        assert stats.get("cluster.authz.health_check.failure", 0) == 0, stats
    stranger = own_pki.client_for("spiffe://cluster.local/ns/other/sa/intruder")
    wrong: list[CertPaths | None] = [None, own_pki.client_other_ca]
    if not http:  # the HTTP door leaves identities to its dedicated CA
        wrong.append(stranger)
    for index, client in enumerate(wrong):
        argv = (*tls_argv(own_pki, authz, client, http=http), *upstream)
        with GeneratedEnvoy(tmp_path / f"bad-{index}", argv) as envoy:
            statuses = {get(envoy, "/public/a") for _ in range(3)}
            assert statuses == {503}, (client, envoy.log_tail())
            if client is not stranger:  # refused at the handshake: Envoy counts it
                counted = {k: v for k, v in envoy.stats("cluster.authz").items() if v}
                assert counted.get("cluster.authz.upstream_cx_connect_fail", 0) > 0, counted


def load(envoy: Envoy, stop: threading.Event, tally: Counter[str]) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, envoy.port, timeout=10)
    try:
        while not stop.is_set():
            try:
                tally[str(get(envoy, "/public/a", connection))] += 1
            except (OSError, http.client.HTTPException) as error:
                tally[type(error).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(LOOPBACK, envoy.port, timeout=10)
    finally:
        connection.close()


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_rotation_during_traffic_fails_no_check(
    tmp_path: Path, own_pki: Pki, service: TlsService, echo: EchoUpstream, door: str
) -> None:
    http = door == "http"
    port = service.http_port if http else service.port
    argv = (*tls_argv(own_pki, f"{LOOPBACK}:{port}", own_pki.client, http=http),)
    argv += ("--upstream", f"{LOOPBACK}:{echo.port}")
    (tmp_path / "pki").mkdir()
    renewed = [
        own_pki.authority.issue(
            tmp_path / "pki",
            f"server-{n}",
            common_name="localhost",
            dns_sans=["localhost"],
            ip_sans=["127.0.0.1"],
            server=True,
        )
        for n in range(2)
    ]
    alpn = "http/1.1" if http else "h2"
    with GeneratedEnvoy(tmp_path / "envoy", argv) as envoy:
        stop, tally = threading.Event(), Counter[str]()
        workers = [threading.Thread(target=load, args=(envoy, stop, tally)) for _ in range(2)]
        for worker in workers:
            worker.start()
        try:
            # One flip per ~5 s of load (at least one), each at a different moment of it.
            flips = max(1, int(SOAK_SECONDS // 5))
            for n in range(flips):
                time.sleep(SOAK_SECONDS / (flips + 1))
                pair = renewed[n % 2]
                service.files.swap(pair)
                deadline = time.monotonic() + 10
                expected = fingerprint(pair.cert.read_bytes())
                seen = ""
                context = client_context(own_pki, own_pki.client, alpn=alpn)
                while seen != expected and time.monotonic() < deadline:
                    # OSError: a connection to the HTTP door's old worker as it stops.
                    with contextlib.suppress(OSError):
                        seen = handshake(port, context)[0]
                    time.sleep(0.1)
                assert seen == expected, "new connections still get the old certificate"
            time.sleep(SOAK_SECONDS / (flips + 1))
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
    print(f"{door}: {SOAK_SECONDS:g} s of load, {flips} flip(s): {dict(tally)}")  # shown with -s
    assert set(tally) == {"200"} and tally["200"] > 0, (dict(tally), envoy.log_tail())


@pytest.mark.parametrize("impostor", ["another name", "another CA"])
def test_envoy_refuses_a_service_it_cannot_verify(
    tmp_path: Path, own_pki: Pki, shared_service: TlsService, echo: EchoUpstream, impostor: str
) -> None:
    service = shared_service
    # What stands between Envoy and the service must not be able to answer for it: a server
    # whose certificate lacks the expected SAN, or is from a CA Envoy does not trust, gets no
    # check through (503), never an allow.
    argv = list(tls_argv(own_pki, f"{LOOPBACK}:{service.port}", own_pki.client, http=False))
    if impostor == "another name":
        argv[argv.index("--authz-san") + 1] = "authz.elsewhere.svc"
    else:
        argv[argv.index("--authz-ca") + 1] = str(own_pki.other_ca)
    argv += ["--upstream", f"{LOOPBACK}:{echo.port}"]
    with GeneratedEnvoy(tmp_path / "envoy", tuple(argv)) as envoy:
        assert {get(envoy, "/public/a") for _ in range(3)} == {503}
        stats = envoy.stats("cluster.authz.ssl.")
        refused = stats.get("cluster.authz.ssl.fail_verify_san", 0)
        refused += stats.get("cluster.authz.ssl.fail_verify_error", 0)
        assert refused > 0, {k: v for k, v in stats.items() if v}


def test_envoy_reads_its_certificate_and_the_cas_from_sds_files(
    tmp_path: Path, own_pki: Pki, shared_service: TlsService, echo: EchoUpstream
) -> None:
    service = shared_service
    client = own_pki.client
    sds = write_sds(tmp_path / "sds", client.cert, client.key, own_pki.ca)
    argv = ("--authz", f"{LOOPBACK}:{service.port}", "--authz-sds", str(sds))
    argv += ("--authz-san", "localhost", "--upstream", f"{LOOPBACK}:{echo.port}")
    with GeneratedEnvoy(tmp_path / "envoy", argv) as envoy:
        assert get(envoy, "/public/a") == 200, envoy.log_tail()
        assert get(envoy, "/private") == 403
