"""deploy/: the single-node and the cluster forms of the rate-limit store agree with the code
(the URLs parse, and name nodes the manifests define)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.limits.stores import CLUSTER, SINGLE, parse

ROOT = Path(__file__).resolve().parents[3]
OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "demo-cluster"


def test_compose_has_the_single_and_the_cluster_form() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["authz-1"]["command"]
    store = command[command.index("--rate-limit-store") + 1]
    default = re.fullmatch(r"\$\{AUTHZ_STORE:-(.+)\}", store)
    assert default and parse(default.group(1)).mode == SINGLE
    assert default.group(1).split("//")[1].split(":")[0] in services
    # The cluster form the comment shows: its nodes are services of the `cluster` profile.
    text = (ROOT / "docker-compose.yml").read_text()
    (url,) = set(re.findall(r"AUTHZ_STORE=(\S+)", text))
    cluster = parse(url)
    assert cluster.mode == CLUSTER
    for host, port in cluster.nodes:
        node = services[host]
        assert node["profiles"] == ["cluster"] and port == 6379
        assert "--cluster-enabled" in node["command"]
    assert services["redis-cluster-create"]["profiles"] == ["cluster"]


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl") or shutil.which("kustomize")
    if kubectl is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    args = [kubectl, "kustomize", str(directory)]
    if kubectl.endswith("kustomize"):
        args = [kubectl, "build", str(directory)]
    rendered = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def test_the_cluster_overlay_points_authz_at_its_statefulset() -> None:
    objects = _kustomize(OVERLAY)
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert ("Deployment", "authz-redis") not in by_kind  # the single node is replaced
    assert ("Job", "authz-redis-cluster-create") in by_kind
    nodes = by_kind[("StatefulSet", "authz-redis-cluster")]
    service = by_kind[("Service", "authz-redis-cluster")]
    assert (
        service["spec"]["clusterIP"] == "None"
        and nodes["spec"]["serviceName"] == "authz-redis-cluster"
    )
    env = by_kind[("Deployment", "authz")]["spec"]["template"]["spec"]["containers"][0]["env"]
    (url,) = [e["value"] for e in env if e["name"] == "AUTHZ_RATE_LIMIT_STORE"]
    store = parse(url)
    assert store.mode == CLUSTER
    for host, port in store.nodes:
        pod, _, domain = host.partition(".")
        assert domain == "authz-redis-cluster" and port == 6379
        assert int(pod.rsplit("-", 1)[1]) < nodes["spec"]["replicas"]
