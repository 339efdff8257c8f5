"""`authz serve --export-envoy DIR` + Envoy reading DIR (ECDS): a policy change is enforced by
Envoy without a restart, and a rejected or unexportable set never reaches Envoy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from authz.envoy_bootstrap import ECDS_FILTERS, REQUEST_HARDENING, ecds_http_filters
from tests.support import https
from tests.support.envoy import Envoy, EnvoyConfig, validate
from tests.support.export_diff import authz_cluster
from tests.support.service import ServiceProcess
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e


def _policy(path: str) -> str:
    return f"rules:\n  - name: open\n    action: allow\n    to: [{{paths: [{path}]}}]\n"


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(0.2)


def test_envoy_enforces_each_accepted_set_without_restart(tmp_path: Path) -> None:
    policies, ecds = tmp_path / "policies", tmp_path / "ecds"
    policies.mkdir()
    (policies / "p.yaml").write_text(_policy("/a"))
    with (
        EchoUpstream() as upstream,
        ServiceProcess(policies, extra_args=("--export-envoy", str(ecds))) as service,
    ):
        config = EnvoyConfig(
            authz_address=service.address,
            upstream_port=upstream.port,
            http_filters=ecds_http_filters(str(ecds)),
            hcm_overrides=dict(REQUEST_HARDENING),
            extra_clusters=[authz_cluster(service.address)],
        )
        with Envoy(config, tmp_path / "envoy") as envoy:

            def status(path: str) -> int:
                return https.request(envoy.url, path).status

            assert (status("/a"), status("/b")) == (200, 403)
            pid = envoy._process.pid if envoy._process else None

            (policies / "p.yaml").write_text(_policy("/b"))
            _eventually(lambda: status("/b") == 200, "the new rule enforced by Envoy")
            assert status("/a") == 403
            version = os.readlink(ecds / "..data")

            # A set the service rejects is never written: Envoy keeps enforcing the last one.
            (policies / "p.yaml").write_text("rules: [{name: broken, action: allow, to: nope}]\n")
            _eventually(lambda: "rejected" in service.log() or "invalid" in service.log(), "reject")
            assert os.readlink(ecds / "..data") == version
            assert (status("/b"), status("/a")) == (200, 403)

            # A set Envoy cannot enforce alone (a header condition on a pseudo-header): written,
            # and its hosts are decided by the service through ext_authz.
            (policies / "p.yaml").write_text(
                _policy("/c") + '    when: [{header: ":method", equals: GET}]\n'
            )
            _eventually(lambda: status("/c") == 200, "the service deciding /c through ext_authz")
            assert os.readlink(ecds / "..data") != version
            # Logged once the files are in place, so Envoy may already enforce them: awaited.
            _eventually(lambda: "decided by this service" in service.log(), "the export's line")
            assert (status("/b"), status("/a")) == (403, 403)
            assert envoy._process is not None and envoy._process.pid == pid  # no restart


def test_envoy_config_native_bootstrap_loads(tmp_path: Path) -> None:
    """`authz envoy-config --native DIR` is a bootstrap Envoy accepts, reading DIR's filters
    (and keeping the authz cluster for the hosts the service decides)."""
    policies, ecds = tmp_path / "policies", tmp_path / "ecds"
    policies.mkdir()
    (policies / "p.yaml").write_text(_policy("/a"))
    from authz.export import export_envoy
    from authz.export.ecds import write_ecds
    from authz.policy import load_policy_set

    policy_set = load_policy_set(str(policies))
    write_ecds(str(ecds), export_envoy(policy_set, hybrid=True), policy_set.revision)
    out = tmp_path / "envoy.yaml"
    subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "--native", str(ecds), "-o", str(out)],
        check=True,
    )
    hcm = yaml.safe_load(out.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]
    filters = hcm["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == [
        *(n for n, _ in ECDS_FILTERS),
        "envoy.filters.http.router",
    ]
    validate(out)
