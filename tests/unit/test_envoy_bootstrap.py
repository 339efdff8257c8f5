"""The Envoy bootstrap generator: its shape, its CLI, and Envoy's own validation of its output."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.addresses import Address as Endpoint
from authz.addresses import AddressError
from authz.cli import main
from authz.commands.demo import write_demo_bootstrap
from authz.envoy_bootstrap import BootstrapOptions, TlsFiles, bootstrap, parse_endpoint
from authz.envoy_istio import (
    IstioOptions,
    istio_authorization_policy,
    istio_envoy_filter,
    istio_extension_provider,
    parse_selector,
)
from authz.envoy_yaml import BOOTSTRAP_NOTES, render_yaml

ENVOY = Path(sys.executable).parent / "envoy"


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    typed: dict[str, Any] = chain["filters"][0]["typed_config"]
    return typed


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = _hcm(config)["http_filters"][0]["typed_config"]
    return typed


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            found: dict[str, Any] = cluster
            return found
    raise AssertionError(f"no cluster {name}")


# ---- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9191", Endpoint("127.0.0.1", 9191)),
        ("authz:9191", Endpoint("authz", 9191)),
        ("[::1]:9191", Endpoint("::1", 9191)),
        (":9191", Endpoint("127.0.0.1", 9191)),  # `authz serve --listen :9191`, on this machine
        ("unix:/run/authz/0.sock", Endpoint(unix_path="/run/authz/0.sock")),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["9191", "host:", ":", "host:99999", "unix:relative", "h:x"])
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        parse_endpoint(text)


def test_upstream_cannot_be_unix() -> None:
    with pytest.raises(AddressError):
        parse_endpoint("unix:/tmp/x", allow_unix=False)


def test_parse_selector() -> None:
    assert parse_selector("app=shop, tier=web") == {"app": "shop", "tier": "web"}
    with pytest.raises(AddressError):
        parse_selector("app")


# ---- the bootstrap -----------------------------------------------------------------------


def test_ext_authz_fails_closed_with_503() -> None:
    typed = _ext_authz(bootstrap(BootstrapOptions()))
    assert typed["failure_mode_allow"] is False
    assert typed["status_on_error"] == {"code": "ServiceUnavailable"}
    assert typed["transport_api_version"] == "V3"
    assert typed["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
    assert typed["grpc_service"]["timeout"] == "0.5s"
    assert "include_peer_certificate" not in typed


def test_ext_authz_runs_before_the_router() -> None:
    names = [f["name"] for f in _hcm(bootstrap(BootstrapOptions()))["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]


def test_authz_cluster_is_http2_round_robin_over_every_endpoint() -> None:
    options = BootstrapOptions(
        authz=(parse_endpoint("127.0.0.1:9191"), parse_endpoint("127.0.0.1:9192"))
    )
    cluster = _cluster(bootstrap(options), "authz")
    assert cluster["type"] == "STATIC"
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    protocol = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in protocol["explicit_http_config"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [9191, 9192]
    assert cluster["health_checks"][0]["grpc_health_check"]["service_name"] == (
        "envoy.service.auth.v3.Authorization"
    )


def test_dns_names_make_a_strict_dns_cluster() -> None:
    options = BootstrapOptions(
        authz=(parse_endpoint("authz-1:9191"), parse_endpoint("authz-2:9191"))
    )
    assert _cluster(bootstrap(options), "authz")["type"] == "STRICT_DNS"


def test_unix_sockets() -> None:
    options = BootstrapOptions(authz=(parse_endpoint("unix:/run/a.sock"),))
    cluster = _cluster(bootstrap(options), "authz")
    assert cluster["type"] == "STATIC"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"pipe": {"path": "/run/a.sock"}}


def test_dns_and_unix_cannot_mix() -> None:
    options = BootstrapOptions(authz=(parse_endpoint("unix:/run/a.sock"), parse_endpoint("a:1")))
    with pytest.raises(AddressError):
        bootstrap(options)


# What every Envoy in front of the service must do (README "Pointing Envoy at it").
HARDENING = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
    # The service folds the host (port, one trailing dot); Envoy must route on the same host.
    "strip_any_host_port": True,
    "strip_trailing_host_dot": True,
}


def _assert_hardened(hcm: dict[str, Any]) -> None:
    for key, value in HARDENING.items():
        assert hcm.get(key) == value, key
    assert (
        hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    )


@pytest.mark.parametrize(
    "tls", [None, TlsFiles("/s.pem", "/s.key", "/ca.pem")], ids=["plain", "mtls"]
)
def test_path_normalization_and_host_folding_are_deliberate(tls: TlsFiles | None) -> None:
    hcm = _hcm(bootstrap(BootstrapOptions(tls=tls)))
    _assert_hardened(hcm)
    assert hcm["common_http_protocol_options"]["idle_timeout"] == "300s"


def test_every_hardening_setting_is_explained() -> None:
    text = render_yaml(bootstrap(BootstrapOptions()), BOOTSTRAP_NOTES)
    lines = text.splitlines()
    for key in [*HARDENING, "headers_with_underscores_action"]:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
        assert lines[index - 1].strip().startswith("#"), key


def test_the_demo_bootstrap_is_hardened(tmp_path: Path) -> None:
    path = write_demo_bootstrap(
        tmp_path, listen_port=1, admin_port=2, authz_port=3, upstream_port=4
    )
    _assert_hardened(_hcm(yaml.safe_load(path.read_text())))


def test_access_log_shows_the_decision() -> None:
    hcm = _hcm(bootstrap(BootstrapOptions()))
    line = hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    assert "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%" in line
    assert "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%" in line


def test_mtls_requires_client_certificates_and_sends_them() -> None:
    config = bootstrap(BootstrapOptions(tls=TlsFiles("/s.pem", "/s.key", "/ca.pem")))
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": "/ca.pem"}
    assert _ext_authz(config)["include_peer_certificate"] is True
    assert _hcm(config)["forward_client_cert_details"] == "SANITIZE"


def test_plain_has_no_transport_socket() -> None:
    chain = bootstrap(BootstrapOptions())["static_resources"]["listeners"][0]["filter_chains"][0]
    assert "transport_socket" not in chain


def test_render_yaml_round_trips_and_comments() -> None:
    config = bootstrap(BootstrapOptions())
    text = render_yaml(config, {"failure_mode_allow": "fail closed"}, header="hello")
    assert yaml.safe_load(text) == config
    lines = text.splitlines()
    assert lines[0] == "# hello"
    index = next(i for i, line in enumerate(lines) if "failure_mode_allow" in line)
    assert lines[index - 1].strip() == "# fail closed"
    # the comment sits at the key's indentation
    assert lines[index - 1].index("#") == lines[index].index("failure_mode_allow")


# ---- Istio -------------------------------------------------------------------------------


def test_istio_provider() -> None:
    provider = istio_extension_provider(IstioOptions(service="authz.sec.svc.cluster.local"))
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["service"] == "authz.sec.svc.cluster.local"
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"  # a string in MeshConfig
    assert grpc["port"] == 9191


def test_istio_custom_policy() -> None:
    policy = istio_authorization_policy(IstioOptions(namespace="web", selector={"app": "x"}))
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["metadata"]["namespace"] == "web"
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": "authz"}
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "x"}}
    assert policy["spec"]["rules"] == [{}]


# ---- the CLI -----------------------------------------------------------------------------


def test_cli_prints_a_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "envoy-config",
            "--authz",
            "127.0.0.1:1",
            "--authz",
            "unix:/tmp/a.sock",
            "--listen",
            "1234",
            "--upstream",
            "10.0.0.1:80",
            "--admin",
            "4321",
            "--admin-address",
            "0.0.0.0",
        ]
    )
    assert code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["admin"]["address"]["socket_address"] == {
        "address": "0.0.0.0",
        "port_value": 4321,
    }
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 1234
    assert len(_cluster(config, "authz")["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2


def test_cli_mtls_needs_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy-config", "--mtls", "--server-cert", "/c"]) == 2
    assert "--server-key" in capsys.readouterr().err


def test_cli_istio(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["envoy-config", "--istio", "--istio-selector", "app=web", "--istio-namespace", "front"]
    )
    assert code == 0
    mesh, policy, hardening = yaml.safe_load_all(capsys.readouterr().out)
    assert mesh["extensionProviders"][0]["name"] == policy["spec"]["provider"]["name"]
    assert policy["metadata"]["namespace"] == "front"
    assert policy["spec"]["selector"]["matchLabels"] == {"app": "web"}
    # The sidecars of the same workloads get the same HCM settings as a standalone Envoy.
    assert hardening["kind"] == "EnvoyFilter"
    assert hardening["metadata"]["namespace"] == "front"
    assert hardening["spec"]["workloadSelector"]["labels"] == {"app": "web"}
    (patch,) = hardening["spec"]["configPatches"]
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert patch["patch"]["operation"] == "MERGE"
    _assert_hardened(patch["patch"]["value"]["typed_config"])


def test_istio_hardening_patch_is_valid_for_envoy(tmp_path: Path) -> None:
    # Merge the EnvoyFilter's patch into a plain HCM and let Envoy itself check the field names.
    config = bootstrap(BootstrapOptions(health_checks=False))
    hcm = _hcm(config)
    for key in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action"):
        del hcm[key]
    for key in ("strip_any_host_port", "strip_trailing_host_dot"):
        hcm.pop(key, None)
    del hcm["common_http_protocol_options"]
    patch = istio_envoy_filter(IstioOptions())["spec"]["configPatches"][0]["patch"]["value"]
    hcm.update({k: v for k, v in patch["typed_config"].items() if k != "@type"})
    _assert_hardened(hcm)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _envoy_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Envoy itself validates what we generate ---------------------------------------------


def _write_certs(directory: Path) -> TlsFiles:
    """A CA and a server certificate it signed; Envoy only needs them to parse and chain."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        str(directory / "server.pem"), str(directory / "server.key"), str(directory / "ca.pem")
    )
    Path(files.server_cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(files.server_key).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    Path(files.client_ca).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def _envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    envoy = str(ENVOY) if ENVOY.exists() else shutil.which("envoy")
    if envoy is None:
        pytest.skip("no envoy binary")
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("mtls", [False, True], ids=["plain", "mtls"])
def test_envoy_accepts_the_generated_config(tmp_path: Path, mtls: bool) -> None:
    argv = [
        "envoy-config",
        "--authz",
        "127.0.0.1:9191",
        "--authz",
        "127.0.0.1:9192",
        "--authz",
        "127.0.0.1:9193",
        "-o",
        str(tmp_path / "envoy.yaml"),
    ]
    if mtls:
        files = _write_certs(tmp_path)
        argv += [
            "--mtls",
            "--server-cert",
            files.server_cert,
            "--server-key",
            files.server_key,
            "--client-ca",
            files.client_ca,
        ]
    assert main(argv) == 0
    result = _envoy_validate(tmp_path / "envoy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_accepts_dns_and_unix_clusters(tmp_path: Path) -> None:
    for name, authz in (("dns", ["authz-1:9191", "authz-2:9191"]), ("unix", ["unix:/tmp/a.sock"])):
        path = tmp_path / f"{name}.yaml"
        argv = ["envoy-config", "--upstream", "upstream:8000", "-o", str(path)]
        for address in authz:
            argv += ["--authz", address]
        assert main(argv) == 0
        result = _envoy_validate(path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_route_context_adds_a_route_with_context_extensions() -> None:
    from authz.envoy_bootstrap import BootstrapOptions, bootstrap, parse_route_context

    options = BootstrapOptions(
        route_contexts=(parse_route_context("/p:api=partners,tier=b2b"), ("/p/long", {"a": "b"}))
    )
    routes = _hcm(bootstrap(options))["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"]["prefix"] for r in routes] == ["/p/long", "/p", "/"]
    per_route = routes[1]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    assert per_route["@type"].endswith("ext_authz.v3.ExtAuthzPerRoute")
    assert per_route["check_settings"] == {"context_extensions": {"api": "partners", "tier": "b2b"}}
    assert "typed_per_filter_config" not in routes[2]


@pytest.mark.parametrize("text", ["p:a=b", "/p", "/p:", "/p:a"])
def test_route_context_is_checked(text: str) -> None:
    from authz.envoy_bootstrap import AddressError, parse_route_context

    with pytest.raises(AddressError):
        parse_route_context(text)
