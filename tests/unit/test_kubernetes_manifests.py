"""The deployment manifests parse and refer to each other consistently.

No cluster is needed: these catch the mistakes `kubectl apply` would only show later (a Service
that selects no pod, a probe on a port that does not exist, a ConfigMap out of date), and keep
the demo's publicly known key out of the base manifests.
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.envoy_istio import (
    IstioOptions,
    istio_authorization_policy,
    istio_envoy_filter,
    istio_mesh_config,
)
from authz.policy import load_policy_set
from authz.policy.load.loader import TEST_SUFFIXES

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes" / "base"
DEMO = REPO / "deploy" / "kubernetes" / "overlays" / "demo"
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
    for path in sorted([*KUBE.glob("*.yaml"), *DEMO.glob("*.yaml"), *ISTIO.glob("*.yaml")]):
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


def test_decision_log_goes_to_stdout(objects: list[Doc]) -> None:
    # A decision id in a deny body or Envoy's access log must lead to a log line.
    assert "--decision-log=-" in _container(objects)["args"]


# ---- the base trusts nothing public; the demo is an overlay --------------------------------


def _repository_private_keys() -> list[Path]:
    return [
        p
        for p in REPO.rglob("*.pem")
        if ".venv" not in p.parts and b"PRIVATE KEY" in p.read_bytes()
    ]


def _b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_fingerprints(path: Path) -> list[str]:
    """The JWK values a public key derived from this private key would be published under."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        return [
            base64.urlsafe_b64encode(numbers.x.to_bytes(size, "big")).rstrip(b"=").decode(),
            base64.urlsafe_b64encode(numbers.y.to_bytes(size, "big")).rstrip(b"=").decode(),
        ]
    if isinstance(public, rsa.RSAPublicKey):
        return [_b64url(public.public_numbers().n)]
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return [base64.urlsafe_b64encode(raw).rstrip(b"=").decode()]
    raise AssertionError(f"{path}: unexpected key type")


def _policy_files(configmap: Doc, directory: Path) -> Path:
    for name, text in configmap["data"].items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_the_base_trusts_no_key_whose_private_half_is_in_the_repository(
    objects: list[Doc],
) -> None:
    keys = _repository_private_keys()
    assert keys, "the demo issuer's key is expected in examples/"
    fingerprints = [f for key in keys for f in _public_fingerprints(key)]
    base_text = "\n".join((KUBE / name).read_text() for name in _kustomization()["resources"])
    for fingerprint in fingerprints:
        assert fingerprint not in base_text
    # The same check finds the demo key in the demo overlay: it can fail.
    demo_text = (DEMO / "configmap-policies.yaml").read_text(encoding="utf-8")
    assert any(f in demo_text for f in fingerprints)


def test_the_base_policy_is_valid_trusts_no_issuer_and_opens_only_health(
    objects: list[Doc], tmp_path: Path
) -> None:
    configmap = _one(objects, "ConfigMap", "authz-policies")
    policy_set = load_policy_set(str(_policy_files(configmap, tmp_path)))
    assert policy_set.jwt_providers == ()
    (rule,) = policy_set.rules
    assert rule.action == "allow"
    text = configmap["data"]["policy.yaml"]
    assert "issuer.example.invalid" in text  # the placeholder an operator replaces


def test_demo_overlay_configmap_equals_the_repository_policies() -> None:
    (configmap,) = _docs(DEMO / "configmap-policies.yaml")
    assert configmap["metadata"]["name"] == "authz-policies"
    files = {
        p.name: p.read_text(encoding="utf-8")
        for p in (REPO / "policies").iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(TEST_SUFFIXES)
    }
    assert configmap["data"] == files, (
        "run: python deploy/kubernetes/overlays/demo/sync_policies.py"
    )


def test_demo_overlay_is_built_on_the_base() -> None:
    overlay: Doc = yaml.safe_load((DEMO / "kustomization.yaml").read_text(encoding="utf-8"))
    # The base, and the Redis that shares the demo policies' rate-limit counters.
    assert overlay["resources"] == ["../../base", "redis.yaml"]
    assert "private key is in the repository".lower() in (
        (DEMO / "kustomization.yaml").read_text(encoding="utf-8").lower().replace("\n# ", " ")
    )
    top: Doc = yaml.safe_load((KUBE.parent / "kustomization.yaml").read_text(encoding="utf-8"))
    assert top["resources"] == ["base"]  # `kubectl apply -k deploy/kubernetes` is the base


def test_sync_script_output_is_committed() -> None:
    spec = importlib.util.spec_from_file_location("sync_policies", DEMO / "sync_policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (DEMO / "configmap-policies.yaml").read_text(encoding="utf-8")


def _kustomize(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


@pytest.mark.parametrize(
    ("directory", "demo"),
    [(KUBE.parent, False), (KUBE, False), (DEMO, True)],
    ids=["deploy/kubernetes", "base", "overlays/demo"],
)
def test_kustomize_builds_each_entry_point(directory: Path, demo: bool) -> None:
    rendered = _kustomize(directory)
    configmap = _one(rendered, "ConfigMap", "authz-policies")
    if demo:
        (expected,) = _docs(DEMO / "configmap-policies.yaml")
    else:
        expected = _one(_docs(KUBE / "configmap-policies.yaml"), "ConfigMap")
    assert configmap["data"] == expected["data"]
    assert {o["kind"] for o in rendered} >= {"Deployment", "Service", "ConfigMap", "Namespace"}
    assert all(
        o["metadata"].get("namespace") == "authz" for o in rendered if o["kind"] != "Namespace"
    )
    # Rate limits are counted in one Redis exactly where the policies have rate_limits.
    deployment = _one(rendered, "Deployment", "authz")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    has_limits = any("rate_limits:" in text for text in configmap["data"].values())
    if has_limits:
        store = env["AUTHZ_RATE_LIMIT_STORE"]
        redis = _one(rendered, "Service", store.split("//")[1].split(":")[0])
        assert redis["spec"]["ports"][0]["port"] == int(store.rsplit(":", 1)[1].split("/")[0])
    else:
        assert "AUTHZ_RATE_LIMIT_STORE" not in env


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


def test_the_image_is_the_one_the_dockerfile_says_how_to_build(objects: list[Doc]) -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    (image,) = _kustomization()["images"]
    assert (image["name"], image["newTag"]) == ("authz", version)
    assert _container(objects)["image"] == f"authz:{version}"
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert f"docker build -t authz:{version} ." in dockerfile


def test_sync_script_help_and_check_write_nothing(tmp_path: Path) -> None:
    """`sync_policies.py --help` prints help; it rewrote the ConfigMap before (issue 25.11)."""
    copy = tmp_path / "deploy" / "kubernetes" / "overlays" / "demo"
    copy.mkdir(parents=True)
    shutil.copy(DEMO / "sync_policies.py", copy / "sync_policies.py")
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    target = copy / "configmap-policies.yaml"
    target.write_text("stale\n")
    script = [sys.executable, str(copy / "sync_policies.py")]
    shown = subprocess.run([*script, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--check" in shown.stdout
    assert target.read_text() == "stale\n"
    checked = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and "out of date" in checked.stdout
    assert target.read_text() == "stale\n"
    assert subprocess.run(script, capture_output=True, timeout=60).returncode == 0
    assert target.read_text() == (DEMO / "configmap-policies.yaml").read_text(encoding="utf-8")
