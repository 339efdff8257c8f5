"""A `jwks_uri` provider exported as jwt_authn `remote_jwks`: a real Envoy fetches the key set
over HTTPS from the tests' own server on loopback (docs/export.md, "Remote key sets").

Covers the fetch through the exported cluster (TLS, the test CA, the server's IP SAN), a key
rotation while requests keep coming (Envoy takes the new key within the cache duration the
export sets; it does not refetch on an unknown kid), the IdP down when Envoy starts (tokens are
refused, then accepted once it answers) and down later (the fetched keys stay in force).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.envoy_bootstrap import REQUEST_HARDENING
from authz.export import EnvoyExport, export_envoy
from authz.policy import load_policy_set
from tests.support import https
from tests.support.certs import Pki, make_pki
from tests.support.envoy import Envoy, EnvoyConfig
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, claims, make_key
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

REFRESH = 2.0  # the cache duration given to Envoy (the service's is 300 s)

POLICY = """
authentication:
  jwt:
    - issuer: ISSUER
      jwks_uri: JWKS_URI
rules:
  - {name: users, action: allow, from: [{issuers: [ISSUER]}], to: [{paths: [/me]}]}
  - {name: anyone, action: allow, to: [{paths: [/open]}]}
"""


@dataclass
class Idp:
    server: JwksServer
    pki: Pki
    root: Path

    def token(self, key: SigningKey, kid: bool = True) -> str:
        payload = claims(self.server.issuer, now=time.time())
        return key.sign(payload) if kid else key.sign(payload, kid=None)


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[Idp]:
    pki = make_pki(tmp_path / "pki")
    with JwksServer(tls=pki.server) as server:
        yield Idp(server, pki, tmp_path)


def _envoy(idp: Idp, name: str) -> Envoy:
    policies = idp.root / f"policies-{name}"
    policies.mkdir()
    text = POLICY.replace("ISSUER", idp.server.issuer).replace("JWKS_URI", idp.server.jwks_uri)
    (policies / "p.yaml").write_text(text)
    exported = export_envoy(
        load_policy_set(str(policies)), ca_file=str(idp.pki.ca), jwks_refresh_seconds=REFRESH
    )
    assert exported.exportable, [str(f) for f in exported.findings]
    [note] = [f for f in exported.findings if not f.decides and "keys fetched" in f.why]
    assert f"from {idp.server.jwks_uri} (jwks_uri)" in note.why
    return _exported_envoy(exported, idp.root / f"envoy-{name}")


def _exported_envoy(exported: EnvoyExport, root: Path) -> Envoy:
    """Envoy enforcing `exported` alone (no ext_authz: its address answers nothing)."""
    return Envoy(
        EnvoyConfig(
            authz_address="127.0.0.1:1",
            upstream_port=_UPSTREAM.port,
            http_filters=exported.filter_dicts(),
            extra_clusters=exported.clusters,
            hcm_overrides=dict(REQUEST_HARDENING),
        ),
        root,
    )


_UPSTREAM = EchoUpstream()


@pytest.fixture(scope="module", autouse=True)
def upstream() -> Iterator[None]:
    with _UPSTREAM:
        yield


def _status(envoy: Envoy, path: str, token: str | None) -> int:
    headers = [("authorization", f"Bearer {token}")] if token is not None else []
    return https.request(envoy.url, path, headers=headers).status


def _eventually(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_envoy_fetches_the_keys_over_https_and_checks_tokens(idp: Idp) -> None:
    key = make_key("RS256")
    idp.server.rotate(key)
    with _envoy(idp, "fetch") as envoy:
        assert _eventually(lambda: _status(envoy, "/me", idp.token(key)) == 200, 10)
        assert idp.server.fetches >= 1
        assert _status(envoy, "/me", None) == 403
        assert _status(envoy, "/open", None) == 200
        # A remote set may change size: a token without kid is refused, as by the service.
        assert _status(envoy, "/open", idp.token(key, kid=False)) == 403
        assert _status(envoy, "/open", idp.token(make_key("RS256"))) == 401


def test_a_rotated_key_is_taken_within_the_cache_duration_under_traffic(idp: Idp) -> None:
    old, new = make_key("RS256"), make_key("RS256")
    idp.server.rotate(old)
    with _envoy(idp, "rotate") as envoy:
        assert _eventually(lambda: _status(envoy, "/me", idp.token(old)) == 200, 10)
        idp.server.rotate(new)
        rotated = time.monotonic()
        seen: list[int] = []
        while time.monotonic() - rotated < REFRESH * 4:
            status = _status(envoy, "/me", idp.token(new))
            seen.append(status)
            if status == 200:
                break
            assert status == 401, status  # refused until Envoy's copy is refreshed, never 5xx
            time.sleep(0.05)
        assert seen[-1] == 200, seen
        assert time.monotonic() - rotated <= REFRESH * 4
        # The old key is gone from the set: its tokens are refused now.
        assert _status(envoy, "/me", idp.token(old)) == 401


def test_the_idp_down_at_start_then_up_then_down_again(idp: Idp) -> None:
    key = make_key("RS256")
    idp.server.rotate(key)
    idp.server.fail(503)
    with _envoy(idp, "down") as envoy:
        # No keys yet: a token cannot be verified (denied), no token is judged by the rules.
        assert _status(envoy, "/me", idp.token(key)) == 401
        assert _status(envoy, "/open", None) == 200
        idp.server.rotate(key)  # the IdP answers again
        assert _eventually(lambda: _status(envoy, "/me", idp.token(key)) == 200, REFRESH * 5)
        idp.server.fail(503)  # down again: the keys Envoy fetched stay in force
        fetches = idp.server.fetches
        assert _eventually(lambda: idp.server.fetches > fetches, REFRESH * 5)
        assert _status(envoy, "/me", idp.token(key)) == 200


def test_discovery_is_resolved_at_export_time(idp: Idp, monkeypatch: pytest.MonkeyPatch) -> None:
    """`discovery: true`: the export reads the issuer's OpenID configuration (with the
    service's own fetcher and trust store) and says where the key URI came from."""
    monkeypatch.setenv("SSL_CERT_FILE", str(idp.pki.ca))
    key = make_key("RS256")
    idp.server.rotate(key)
    policies = idp.root / "discovery"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        POLICY.replace("ISSUER", idp.server.issuer).replace("jwks_uri: JWKS_URI", "discovery: true")
    )
    exported = export_envoy(load_policy_set(str(policies)), ca_file=str(idp.pki.ca))
    assert exported.exportable, [str(f) for f in exported.findings]
    assert idp.server.discovery_fetches == 1
    [note] = [f for f in exported.findings if "keys fetched" in f.why]
    configuration = f"{idp.server.issuer}/.well-known/openid-configuration"
    assert f"from {idp.server.jwks_uri} (discovery: {configuration})" in note.why
    with _exported_envoy(exported, idp.root / "envoy-discovery") as envoy:
        assert _eventually(lambda: _status(envoy, "/me", idp.token(key)) == 200, 10)


def test_serve_export_envoy_writes_the_idp_cluster_beside_the_filters(idp: Idp) -> None:
    """`authz serve --export-envoy DIR`: the remote set's cluster is a CDS file in DIR, read by
    the bootstrap `authz envoy-config --native` makes (ecds_clusters); a reload that turns the
    provider to discovery resolves it again and Envoy follows without a restart."""
    from authz.envoy_bootstrap import ecds_clusters, ecds_http_filters
    from tests.support.export_diff import authz_cluster
    from tests.support.service import ServiceProcess

    key = make_key("RS256")
    idp.server.rotate(key)
    policies, ecds = idp.root / "served", idp.root / "ecds"
    policies.mkdir()
    text = POLICY.replace("ISSUER", idp.server.issuer).replace("JWKS_URI", idp.server.jwks_uri)
    (policies / "p.yaml").write_text(text)
    env = {"SSL_CERT_FILE": str(idp.pki.ca)}
    with ServiceProcess(policies, extra_args=("--export-envoy", str(ecds)), extra_env=env) as svc:
        config = EnvoyConfig(
            authz_address=svc.address,
            upstream_port=_UPSTREAM.port,
            http_filters=ecds_http_filters(str(ecds)),
            dynamic_resources=ecds_clusters(str(ecds)),
            hcm_overrides=dict(REQUEST_HARDENING),
            extra_clusters=[authz_cluster(svc.address)],
        )
        with Envoy(config, idp.root / "envoy-served") as envoy:
            assert _eventually(lambda: _status(envoy, "/me", idp.token(key)) == 200, 15)
            assert not envoy.stats(f"cluster.{_AUTHZ}.upstream_rq_total").get(
                f"cluster.{_AUTHZ}.upstream_rq_total"
            )  # decided by Envoy alone
            discovery = text.replace(f"jwks_uri: {idp.server.jwks_uri}", "discovery: true")
            (policies / "p.yaml").write_text(discovery.replace("/open", "/open2"))
            assert _eventually(lambda: _status(envoy, "/open2", None) == 200, 30)
            assert idp.server.discovery_fetches >= 1
            assert _status(envoy, "/me", idp.token(key)) == 200


_AUTHZ = "authz"
