"""The docker-compose deployment is checked without Docker: Envoy validates its config, the
compose file parses and points at files that exist, and the pieces agree on names and ports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.commands.demo import find_envoy
from authz.envoy_bootstrap import REQUEST_HARDENING
from tests.support.envoy import EXT_AUTHZ_FILTER, EnvoyError, validate
from tests.support.ports import LOOPBACK, free_port, wait_for_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = ROOT / "deploy" / "envoy" / "envoy.yaml"
COMPOSE = ROOT / "docker-compose.yml"
ECHO_APP = ROOT / "deploy" / "upstream" / "echo.py"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def envoy_config() -> dict[str, Any]:
    config: dict[str, Any] = _load(ENVOY_YAML)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    config: dict[str, Any] = _load(COMPOSE)
    return config


def _hcm(envoy_config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = envoy_config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    config: dict[str, Any] = hcm["typed_config"]
    return config


def _http_filter(envoy_config: dict[str, Any], name: str) -> dict[str, Any]:
    filters: dict[str, dict[str, Any]] = {
        f["name"]: f["typed_config"] for f in _hcm(envoy_config)["http_filters"]
    }
    return filters[name]


def _cluster(envoy_config: dict[str, Any], name: str) -> dict[str, Any]:
    clusters: dict[str, dict[str, Any]] = {
        c["name"]: c for c in envoy_config["static_resources"]["clusters"]
    }
    return clusters[name]


def _endpoint(cluster: dict[str, Any]) -> tuple[str, int]:
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    return address["address"], address["port_value"]


def test_envoy_accepts_the_deploy_config() -> None:
    result = validate(ENVOY_YAML)
    assert "OK" in result.stdout + result.stderr


def test_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    # Proves the check above can fail: an unknown field in the ext_authz filter.
    broken = ENVOY_YAML.read_text().replace(
        "failure_mode_allow: false",
        "failure_mode_allow: false\n" + " " * 22 + "no_such_field: 1",
    )
    assert broken != ENVOY_YAML.read_text()
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    with pytest.raises(EnvoyError, match="no_such_field"):
        validate(path)


def test_ext_authz_fails_closed_with_503(envoy_config: dict[str, Any]) -> None:
    ext_authz = _http_filter(envoy_config, EXT_AUTHZ_FILTER)
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"]["code"] in ("ServiceUnavailable", 503)
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["include_peer_certificate"] is True
    assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
    assert "timeout" in ext_authz["grpc_service"]
    # ext_authz runs before the router, or it would not guard anything.
    names = [f["name"] for f in _hcm(envoy_config)["http_filters"]]
    assert names.index(EXT_AUTHZ_FILTER) < names.index("envoy.filters.http.router")


def _hardening(hcm: dict[str, Any]) -> dict[str, Any]:
    """The REQUEST_HARDENING keys as `hcm` sets them (missing ones as None)."""
    found = {k: hcm.get(k) for k in REQUEST_HARDENING if k != "common_http_protocol_options"}
    found["common_http_protocol_options"] = {
        k: hcm.get("common_http_protocol_options", {}).get(k)
        for k in REQUEST_HARDENING["common_http_protocol_options"]
    }
    return found


def test_envoy_normalizes_and_folds_hosts_as_envoy_config_does(
    envoy_config: dict[str, Any],
) -> None:
    # One choice for every Envoy config in the repository (README "Pointing Envoy at it").
    hcm = _hcm(envoy_config)
    assert _hardening(hcm) == dict(REQUEST_HARDENING)
    assert hcm["strip_any_host_port"] is True and hcm["strip_trailing_host_dot"] is True
    assert hcm["use_remote_address"] is True


def test_readme_snippet_sets_the_same_hardening() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Pointing Envoy at it", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    hcm = yaml.safe_load(snippet)
    assert _hardening(hcm) == dict(REQUEST_HARDENING)
    (ext_authz,) = [f for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ_FILTER]
    assert ext_authz["typed_config"]["failure_mode_allow"] is False
    # Each setting is explained in that section.
    for key in ("strip_any_host_port", "strip_trailing_host_dot", "headers_with_underscores"):
        assert section.count(key) >= 2, key


def test_compose_runs_the_envoy_version_the_tests_run(compose: dict[str, Any]) -> None:
    output = subprocess.run(
        [find_envoy(), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    match = re.search(r"/(\d+\.\d+\.\d+)/", output)
    assert match, output
    assert compose["services"]["envoy"]["image"] == f"envoyproxy/envoy:v{match.group(1)}"


def test_access_log_shows_decision_metadata(envoy_config: dict[str, Any]) -> None:
    (log,) = _hcm(envoy_config)["access_log"]
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["decision_id"] == f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:decision_id)%"
    assert fields["reason"] == f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:reason)%"


def test_clusters_point_at_compose_services(
    envoy_config: dict[str, Any], compose: dict[str, Any]
) -> None:
    authz = _cluster(envoy_config, "authz")
    shop = _cluster(envoy_config, "shop")
    # DNS clusters: compose names resolve at run time, and validate mode does not resolve them.
    assert authz["type"] in ("STRICT_DNS", "LOGICAL_DNS")
    assert shop["type"] in ("STRICT_DNS", "LOGICAL_DNS")
    endpoints = [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in authz["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert endpoints == [("authz-1", 9191), ("authz-2", 9191)]
    assert _endpoint(shop) == ("shop", 8000)
    http2 = authz["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["explicit_http_config"]
    assert "http2_protocol_options" in http2
    assert {"envoy", "authz-1", "authz-2", "shop", "prometheus"} <= set(compose["services"])

    (listener,) = envoy_config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == 8080
    assert envoy_config["admin"]["address"]["socket_address"]["port_value"] == 9901
    published = [str(p) for p in compose["services"]["envoy"]["ports"]]
    assert any(p.endswith(":8080") for p in published)
    assert any(p.endswith(":9901") for p in published)


def _host_path(volume: str) -> Path:
    source = volume.split(":", 1)[0]
    assert source.startswith("."), f"bind mounts should be relative to the repo: {volume}"
    return ROOT / source


def test_compose_references_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = "Dockerfile"
            if not isinstance(build, str):
                dockerfile = build.get("dockerfile", dockerfile)
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} missing in {context}"
        for volume in service.get("volumes", []):
            assert _host_path(volume).exists(), f"{name}: {volume} has no source in the repo"


def test_compose_services_are_wired_as_documented(compose: dict[str, Any]) -> None:
    services = compose["services"]
    envoy = services["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v")
    mounts = {v.split(":")[1]: _host_path(v) for v in envoy["volumes"]}
    assert mounts["/etc/envoy/envoy.yaml"] == ENVOY_YAML
    assert "/etc/envoy/envoy.yaml" in envoy["command"]

    assert services["authz-1"] == services["authz-2"]  # replicas of one definition
    authz = services["authz-1"]
    assert authz["build"]["context"] == "."
    command = authz["command"]
    assert command[0] == "serve"
    assert command[command.index("--policies") + 1] == "/policies"
    assert command[command.index("--listen") + 1] == "0.0.0.0:9191"
    mounts = {v.split(":")[1]: _host_path(v) for v in authz["volumes"]}
    assert mounts["/policies"] == ROOT / "policies"


def test_authz_dockerfile_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile
    assert 'pip install ".[otel]"' in dockerfile
    assert 'ENTRYPOINT ["authz"]' in dockerfile
    assert "USER " in dockerfile  # not root
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git"} <= ignored
    # What `pip install .` needs must stay in the build context.
    assert not ignored & {"authz", "pyproject.toml", "README.md"}


@pytest.fixture
def echo_app() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ECHO_APP), "--host", LOOPBACK, "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(LOOPBACK, port, timeout=15)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_demo_shop_echoes_the_request(echo_app: str) -> None:
    request = urllib.request.Request(
        f"{echo_app}/api/orders/7?x=1",
        headers={"X-Authz-Principal": "p"},
        method="POST",
        data=b"hi",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body["method"] == "POST"
    assert body["path"] == "/api/orders/7?x=1"
    assert body["headers"]["x-authz-principal"] == "p"
    assert body["body"] == "hi"
