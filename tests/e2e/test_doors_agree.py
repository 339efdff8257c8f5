"""One decision at both ext_authz doors (issue 22): the same policy and the same adversarial
requests through a real Envoy in front of the gRPC door (ext_authz `grpc_service`) and a real
Envoy running what `authz envoy-config --http` prints in front of the HTTP door. Both must give
the same status for every request, and each request's expected one: `;params`, a header sent
twice, conditions on pseudo-headers, `host` and `content-length`, `ip_blocks`, and an API key
under a percent-encoded query name (removed under that name before the upstream sees it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.identity.apikeys import key_hash
from tests.support import https
from tests.support.certs import Pki
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

KEY = "door-key-0123456789abcdef"
POLICY = """
authentication:
  api_keys:
    - {name: partners, from: [{query: api_key}], keys_file: partners.keys.yaml}
rules:
  - {name: no-admin, action: deny, to: [{paths: [/api/admin]}]}
  - {name: no-guests, action: deny, when: [{header: x-role, equals: guest}]}
  - {name: no-internal, action: deny, when: [{header: ":path", prefix: /open/internal}]}
  - {name: no-delete, action: deny, when: [{header: ":method", equals: DELETE}]}
  - {name: tls-only, action: deny, to: [{paths: [/open/plain]}],
     when: [{header: ":scheme", equals: https}]}
  - {name: no-blocked-host, action: deny, when: [{header: ":authority", prefix: blocked.}]}
  - {name: no-host-header, action: deny, when: [{header: host, present: true}]}
  - {name: no-envoy-own, action: deny,
     when: [{header: x-envoy-expected-rq-timeout-ms, present: true}]}
  - {name: no-five-bytes, action: deny, when: [{header: content-length, equals: "5"}]}
  - {name: not-from-loopback, action: deny, from: [{ip_blocks: [127.0.0.0/8]}],
     to: [{paths: [/ip-deny]}]}
  - {name: loopback, action: allow, from: [{ip_blocks: [127.0.0.1/32]}], to: [{paths: [/ip]}]}
  - {name: json, action: allow, to: [{paths: ["*.json"]}]}
  - {name: app, action: allow, to: [{paths: ["/app/{**}"], not_paths: [/app/admin]}]}
  - {name: staff, action: allow, to: [{paths: [/staff]}],
     when: [{header: x-team, present: true}, {header: x-team, not_equals: contractors}]}
  - {name: api, action: allow, to: [{paths: ["/api/{**}"]}]}
  - {name: open, action: allow, to: [{paths: ["/open/{**}"]}]}
  - {name: partners, action: allow, from: [{api_keys: ["partners/*"]}], to: [{paths: [/keyed]}]}
"""

# (method, path, headers, body, the status both doors must give)
CORPUS: list[tuple[str, str, list[tuple[str, str]], bytes | None, int]] = [
    ("GET", "/api/orders", [], None, 200),
    ("GET", "/api;v=1/admin", [], None, 403),
    ("GET", "/api/admin;x=1", [], None, 403),
    ("GET", "/secret/data;.json", [], None, 403),
    ("GET", "/data/x.json", [], None, 200),
    ("GET", "/app/admin;jsessionid=1", [], None, 403),
    ("GET", "/app/orders;jsessionid=1", [], None, 200),
    ("GET", "/open/x", [("x-role", "admin"), ("x-role", "guest")], None, 403),
    ("GET", "/open/x", [("x-role", "guest"), ("x-role", "guest")], None, 403),
    ("GET", "/open/x", [("x-role", "admin")], None, 200),
    ("GET", "/staff", [("x-team", "ops")], None, 200),
    ("GET", "/staff", [("x-team", "ops"), ("x-team", "contractors")], None, 403),
    ("GET", "/open/internal/x", [], None, 403),
    ("GET", "/open/plain", [], None, 403),
    ("DELETE", "/open/x", [], None, 403),
    ("GET", "/open/x", [("host", "blocked.example.com")], None, 403),
    ("GET", "/open/x", [("host", "fine.example.com")], None, 200),
    ("POST", "/open/x", [], b"hello", 403),
    ("POST", "/open/x", [], b"hi", 200),
    ("GET", "/ip", [], None, 200),
    ("GET", "/ip-deny", [], None, 403),
    ("GET", "/open/x", [("x-forwarded-for", "10.9.9.9")], None, 200),
    ("GET", "/ip", [("x-forwarded-for", "10.9.9.9")], None, 200),
]


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("doors") / "policies"
    directory.mkdir()
    (directory / "doors.yaml").write_text(POLICY)
    (directory / "partners.keys.yaml").write_text(
        f"keys:\n  - {{id: acme-1, sha256: {key_hash(KEY)}}}\n"
    )
    return directory


def _run(envoy: Envoy, pki: Pki) -> list[tuple[str, str, int]]:
    results = []
    for method, path, headers, body, _ in CORPUS:
        answer = https.request(
            envoy.url,
            path,
            method=method,
            ca=pki.ca,
            client_cert=pki.client,
            headers=headers,
            body=body,
        )
        results.append((method, path, answer.status))
    return results


@pytest.fixture(scope="module")
def grpc_door(
    policies: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Envoy, EchoUpstream]]:
    """One service and one Envoy for the module (the tests only send requests through them)."""
    with EchoUpstream() as upstream, ServiceProcess(policies) as service:
        config = EnvoyConfig(
            authz_address=service.address,
            upstream_host=upstream.host,
            upstream_port=upstream.port,
            tls=TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca),
            normalize_path=True,
            merge_slashes=True,
            path_with_escaped_slashes_action="REJECT_REQUEST",
        )
        with Envoy(config, tmp_path_factory.mktemp("envoy-grpc")) as envoy:
            yield envoy, upstream


@pytest.fixture
def grpc_envoy(grpc_door: tuple[Envoy, EchoUpstream]) -> Envoy:
    return grpc_door[0]


@pytest.fixture
def http_envoy(policies: Path, pki: Pki, upstream: EchoUpstream, tmp_path: Path) -> Iterator[Envoy]:
    with ServeProcess(policies, "--no-grpc") as service:
        tls = TlsConfig(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)
        with HttpModeEnvoy(service, upstream, tmp_path / "envoy-http", tls=tls) as envoy:
            yield envoy


def test_the_grpc_door_gives_each_expected_answer(grpc_envoy: Envoy, pki: Pki) -> None:
    expected = [(m, p, status) for m, p, _, _, status in CORPUS]
    assert _run(grpc_envoy, pki) == expected


def test_the_http_door_gives_the_same_answers(http_envoy: Envoy, pki: Pki) -> None:
    expected = [(m, p, status) for m, p, _, _, status in CORPUS]
    assert _run(http_envoy, pki) == expected


@pytest.mark.parametrize("name", ["api_key", "api%5Fkey", "ap%69_key"])
def test_an_api_key_under_any_spelling_never_reaches_the_upstream(
    grpc_door: tuple[Envoy, EchoUpstream], pki: Pki, name: str
) -> None:
    grpc_envoy, upstream = grpc_door
    upstream.clear()
    answer = https.request(
        grpc_envoy.url, f"/keyed?{name}={KEY}&page=2", ca=pki.ca, client_cert=pki.client
    )
    assert answer.status == 200, answer.text
    seen = upstream.requests[-1]
    assert KEY not in seen.path and seen.path == "/keyed?page=2"
