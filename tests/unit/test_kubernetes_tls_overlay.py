"""deploy/kubernetes/overlays/tls: the cert-manager resources, the patched Deployment and the
Envoy side refer to each other consistently, the patched arguments are a valid TLS setup of
`authz serve`, and the documented Envoy side (SDS file + `authz envoy-config`) validates in Envoy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from authz.commands import envoy_config, serve
from authz.config_file import load_settings
from authz.envoy_tls import CA_SECRET, CLIENT_SECRET
from authz.tls.plan import GRPC, tls_plan
from tests.support.certs import make_pki
from tests.support.envoy import validate

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "kubernetes" / "overlays" / "tls"
BASE = REPO / "deploy" / "kubernetes" / "base"

Doc = dict[str, Any]


def docs(name: str) -> list[Doc]:
    path = OVERLAY / name
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def patched_deployment() -> Doc:
    """The base Deployment with the overlay's JSON patch applied (its ops only append)."""
    (deployment,) = [d for d in yaml.safe_load_all((BASE / "deployment.yaml").read_text())]
    (kustomization,) = docs("kustomization.yaml")
    (patch,) = kustomization["patches"]
    for op in yaml.safe_load(patch["patch"]):
        assert op["op"] == "add" and op["path"].endswith("/-")
        node: Any = deployment
        for part in op["path"].strip("/").split("/")[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node.append(op["value"])
    return deployment


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    return value


def test_overlay_lists_its_files_and_the_certificates_chain_up() -> None:
    (kustomization,) = docs("kustomization.yaml")
    assert set(kustomization["resources"]) == {"../../base", "server-certificate.yaml"}
    ca = {d["metadata"]["name"]: d for d in docs("ca.yaml")}
    assert ca["authz-ca"]["spec"]["ca"]["secretName"] == ca["authz-root-ca"]["spec"]["secretName"]
    assert ca["authz-root-ca"]["spec"]["isCA"] is True
    (server,) = docs("server-certificate.yaml")
    client = next(d for d in docs("envoy-client.yaml") if d["kind"] == "Certificate")
    for certificate in (server, client):
        assert certificate["spec"]["issuerRef"]["name"] == "authz-ca"
    assert server["spec"]["usages"] == ["server auth"]
    assert client["spec"]["usages"] == ["client auth"]


def test_the_patched_deployment_serves_the_certificate_to_the_allowed_envoy(
    tmp_path: Path,
) -> None:
    pod = patched_deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    (server,) = docs("server-certificate.yaml")
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == server["spec"]["secretName"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    for name in ("--tls-cert", "--tls-key", "--tls-client-ca"):
        assert os.path.dirname(flag(args, name)) == mount["mountPath"]
    client = next(d for d in docs("envoy-client.yaml") if d["kind"] == "Certificate")
    assert flag(args, "--tls-allowed-client") in client["spec"]["uris"]
    # The probes stay plaintext (the kubelet presents no client certificate).
    assert "--admin-plaintext" in args
    parser = argparse.ArgumentParser()
    serve.configure(parser)
    parsed = parser.parse_args(args[1:])
    settings = load_settings(flags=vars(parsed), check_paths=False)
    plan = tls_plan(settings)
    assert set(plan) == {GRPC} and plan[GRPC].allowed is not None


def test_the_documented_envoy_side_validates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    mounted = tmp_path / "authz-client"
    mounted.mkdir()
    for name, source in (("tls.crt", pki.client.cert), ("tls.key", pki.client.key)):
        (mounted / name).write_bytes(source.read_bytes())
    (mounted / "ca.crt").write_bytes(pki.ca.read_bytes())
    configmap = next(d for d in docs("envoy-client.yaml") if d["kind"] == "ConfigMap")
    assert set(configmap["data"]) == {f"{CLIENT_SECRET}.yaml", f"{CA_SECRET}.yaml"}
    sds = tmp_path / "sds"
    sds.mkdir()
    for file_name, sds_text in configmap["data"].items():
        (secret,) = yaml.safe_load(sds_text)["resources"]  # Envoy takes one per file
        assert f"{secret['name']}.yaml" == file_name
        content = secret.get("tls_certificate") or secret["validation_context"]
        named = content.get("certificate_chain") or content["trusted_ca"]
        assert os.path.dirname(named["filename"]) == content["watched_directory"]["path"]
        (sds / file_name).write_text(sds_text.replace("/etc/envoy/authz-client", str(mounted)))
    comment = (OVERLAY / "envoy-client.yaml").read_text()
    assert "--authz-sds /etc/envoy/sds " in comment
    parser = argparse.ArgumentParser()
    envoy_config.configure(parser)
    argv = [
        "--authz", "authz-pods.authz.svc.cluster.local:9191",
        "--authz-sds", str(sds),
        "--authz-san", "spiffe://cluster.local/ns/authz/sa/authz",
    ]  # fmt: skip
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config.build_text(parser.parse_args(argv)))
    validate(config)
