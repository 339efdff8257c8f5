"""The deployment manifests parse and refer to each other consistently.

No cluster is needed: these catch the mistakes `kubectl apply` would only show later (a Service
that selects no pod, a probe on a port that does not exist, a ConfigMap out of date).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.envoy_bootstrap import (
    IstioOptions,
    istio_authorization_policy,
    istio_envoy_filter,
    istio_mesh_config,
)
from authz.policy.loader import TEST_SUFFIXES

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
ISTIO = REPO / "deploy" / "istio"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"

Doc = dict[str, Any]


def _docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _kustomization() -> Doc:
    doc: Doc = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def objects() -> list[Doc]:
    found: list[Doc] = []
    for name in _kustomization()["resources"]:
        found.extend(_docs(KUBE / name))
    return found


def _one(objects: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _pod_spec(objects: list[Doc]) -> Doc:
    spec: Doc = _one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def _container(objects: list[Doc]) -> Doc:
    containers = _pod_spec(objects)["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def test_every_manifest_parses_and_has_kind_and_name() -> None:
    for path in sorted([*KUBE.glob("*.yaml"), *ISTIO.glob("*.yaml")]):
        docs = _docs(path)
        assert docs, path
        for doc in docs:
            assert doc.get("apiVersion"), path
            assert doc.get("kind"), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_kustomization_namespace_exists(objects: list[Doc]) -> None:
    namespace = _one(objects, "Namespace")
    assert namespace["metadata"]["name"] == _kustomization()["namespace"]


def test_deployment_has_two_replicas_and_matching_selector(objects: list[Doc]) -> None:
    deployment = _one(objects, "Deployment", "authz")
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_services_select_the_pods_and_name_real_ports(objects: list[Doc]) -> None:
    labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in _container(objects)["ports"]}
    services = [o for o in objects if o["kind"] == "Service"]
    assert services
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, port
    main = _one(objects, "Service", "authz")
    ports = {p["port"] for p in main["spec"]["ports"]}
    assert ports == {9191, 9092}


def test_probes_use_the_admin_port(objects: list[Doc]) -> None:
    container = _container(objects)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names["admin"] == 9092
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    assert "--admin=0.0.0.0:9092" in container["args"]


def test_security_context_and_resources(objects: list[Doc]) -> None:
    pod = _pod_spec(objects)
    container = _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_every_mounted_volume_exists(objects: list[Doc]) -> None:
    pod = _pod_spec(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in _container(objects)["volumeMounts"]:
        assert mount["name"] in volumes
    configmaps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for volume in volumes.values():
        if "configMap" in volume:
            assert volume["configMap"]["name"] in configmaps


def test_policies_are_mounted_where_serve_reads_them(objects: list[Doc]) -> None:
    container = _container(objects)
    policies_volume = next(v["name"] for v in _pod_spec(objects)["volumes"] if "configMap" in v)
    mount = next(m for m in container["volumeMounts"] if m["name"] == policies_volume)
    assert f"--policies={mount['mountPath']}" in container["args"]


def test_pdb_and_hpa_target_the_deployment(objects: list[Doc]) -> None:
    deployment = _one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    hpa = _one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_configmap_equals_the_repository_policies(objects: list[Doc]) -> None:
    configmap = _one(objects, "ConfigMap", "authz-policies")
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in (REPO / "policies").iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(TEST_SUFFIXES)
    }
    assert configmap["data"] == files, "run: python deploy/kubernetes/sync_policies.py"


def test_sync_script_output_is_committed() -> None:
    spec = importlib.util.spec_from_file_location("sync_policies", KUBE / "sync_policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (KUBE / "configmap-policies.yaml").read_text(encoding="utf-8")


# ---- Istio -------------------------------------------------------------------------------


def test_istio_files_match_the_generator(objects: list[Doc]) -> None:
    (operator,) = _docs(ISTIO / "meshconfig.yaml")
    (policy,) = _docs(ISTIO / "authorization-policy.yaml")
    options = IstioOptions()
    assert operator["spec"]["meshConfig"] == istio_mesh_config(options)
    assert policy == istio_authorization_policy(options)
    (hardening,) = _docs(ISTIO / "envoy-filter.yaml")
    assert hardening == istio_envoy_filter(options)


def test_istio_provider_points_at_the_service(objects: list[Doc]) -> None:
    (operator,) = _docs(ISTIO / "meshconfig.yaml")
    provider = operator["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    service = _one(objects, "Service", "authz")
    namespace = _kustomization()["namespace"]
    assert provider["service"] == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert provider["port"] == grpc_port["port"]
    assert provider["failOpen"] is False
    assert provider["statusOnError"] == "503"
    (policy,) = _docs(ISTIO / "authorization-policy.yaml")
    assert (
        policy["spec"]["provider"]["name"]
        == operator["spec"]["meshConfig"]["extensionProviders"][0]["name"]
    )


# ---- Prometheus --------------------------------------------------------------------------


def test_prometheus_scrapes_the_admin_port_of_every_replica(objects: list[Doc]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "authz")
    targets = job["static_configs"][0]["targets"]
    assert len(targets) >= 2
    admin = next(p["containerPort"] for p in _container(objects)["ports"] if p["name"] == "admin")
    assert all(t.endswith(f":{admin}") for t in targets)
    annotations = _one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(admin)
    assert annotations["prometheus.io/path"] == job["metrics_path"]
