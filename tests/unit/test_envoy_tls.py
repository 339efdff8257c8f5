"""`authz envoy-config --authz-ca ...`: the ext_authz cluster's UpstreamTlsContext in every mode
(gRPC, --http, --native, Istio), checked field by field and validated by Envoy itself."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.addresses import AddressError
from authz.commands import envoy_config
from authz.envoy_bootstrap import ecds_files
from tests.support.certs import Pki, make_pki
from tests.support.envoy import validate
from tests.support.tls_serve import write_sds


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def text(*argv: str) -> str:
    parser = argparse.ArgumentParser()
    envoy_config.configure(parser)
    return envoy_config.build_text(parser.parse_args(argv))


def authz_cluster(config: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "authz"]
    return cluster


def tls_flags(pki: Pki) -> list[str]:
    return [
        "--authz-ca", str(pki.ca),
        "--authz-san", "spiffe://cluster.local/ns/authz/sa/authz",
        "--authz-san", "authz.authz.svc",
        "--authz-client-cert", str(pki.client.cert),
        "--authz-client-key", str(pki.client.key),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "alpn"),
    [((), "h2"), (("--http",), "http/1.1"), (("--native",), "h2")],
)
def test_every_bootstrap_mode_verifies_the_service_and_presents_envoys_certificate(
    tmp_path: Path, pki: Pki, mode: tuple[str, ...], alpn: str
) -> None:
    if mode == ("--native",):  # the directory `authz serve --export-envoy` writes
        ecds = tmp_path / "ecds"
        ecds.mkdir()
        for path in ecds_files(str(ecds)):
            Path(path).touch()
        mode = ("--native", str(ecds))
    output = text(*mode, *tls_flags(pki))
    socket = authz_cluster(yaml.safe_load(output))["transport_socket"]
    typed = socket["typed_config"]
    assert typed["@type"].endswith("tls.v3.UpstreamTlsContext")
    common = typed["common_tls_context"]
    assert common["alpn_protocols"] == [alpn]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2"}
    assert common["validation_context"]["trusted_ca"] == {"filename": str(pki.ca)}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/authz/sa/authz"}},
        {"san_type": "DNS", "matcher": {"exact": "authz.authz.svc"}},
    ]
    (pair,) = common["tls_certificates"]
    assert pair["certificate_chain"] == {"filename": str(pki.client.cert)}
    if mode == ("--http",):
        # The HTTP door replaces its worker to rotate: a reset on an idle connection is retried.
        filters = yaml.safe_load(output)["static_resources"]["listeners"][0]["filter_chains"][0]
        hcm = filters["filters"][0]["typed_config"]
        (ext_authz,) = [f for f in hcm["http_filters"] if f["name"].endswith("ext_authz")]
        retry = ext_authz["typed_config"]["http_service"]["retry_policy"]
        assert retry == {"retry_on": "reset,connect-failure", "num_retries": 1}
    path = tmp_path / "envoy.yaml"
    path.write_text(output)
    if mode and mode[0] == "--native":
        return  # its ECDS files are not there; the cluster is the one validated above
    validate(path)


def test_certificate_and_cas_from_sds_files_validate(tmp_path: Path, pki: Pki) -> None:
    # Both rotate without an Envoy restart: Envoy re-reads them when the directory changes.
    sds = write_sds(tmp_path / "sds", pki.client.cert, pki.client.key, pki.ca)
    san = "spiffe://cluster.local/ns/authz/sa/authz"
    output = text("--authz-sds", str(sds), "--authz-san", san)
    common = authz_cluster(yaml.safe_load(output))["transport_socket"]["typed_config"][
        "common_tls_context"
    ]
    (secret,) = common["tls_certificate_sds_secret_configs"]
    assert secret["name"] == "authz-client"
    source = secret["sds_config"]["path_config_source"]
    assert source == {
        "path": str(sds / "authz-client.yaml"),
        "watched_directory": {"path": str(sds)},
    }
    combined = common["combined_validation_context"]
    ca_source = combined["validation_context_sds_secret_config"]
    assert ca_source["name"] == "authz-ca"
    assert ca_source["sds_config"]["path_config_source"]["path"] == str(sds / "authz-ca.yaml")
    assert combined["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": san}}
    ]
    assert "tls_certificates" not in common and "validation_context" not in common
    path = tmp_path / "envoy.yaml"
    path.write_text(output)
    validate(path)


def test_without_tls_flags_the_cluster_is_plaintext() -> None:
    assert "transport_socket" not in authz_cluster(yaml.safe_load(text()))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--authz-san", "x"), "need --authz-ca or --authz-sds"),
        (("--authz-ca", "ca.pem", "--authz-client-cert", "c.pem"), "go together"),
        (("--authz-ca", "ca.pem", "--authz-sds", "sds"), "not both"),
        (
            ("--authz-sds", "sds", "--authz-client-cert", "c.pem",
             "--authz-client-key", "k.pem"),
            "drop --authz-client-cert",
        ),
        (("--istio", "--authz-sds", "sds"), "--istio"),
    ],
)  # fmt: skip
def test_flags_that_do_not_fit_are_refused(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(AddressError, match=message):
        text(*argv)


def test_istio_output_adds_a_destination_rule_only_with_tls(pki: Pki) -> None:
    assert len(list(yaml.safe_load_all(text("--istio")))) == 3
    output = text("--istio", *tls_flags(pki))
    documents = list(yaml.safe_load_all(output))
    rule = documents[-1]
    assert rule["kind"] == "DestinationRule"
    assert rule["spec"]["host"] == "authz.authz.svc.cluster.local"
    (port,) = rule["spec"]["trafficPolicy"]["portLevelSettings"]
    assert port["port"] == {"number": 9191}
    assert port["tls"]["mode"] == "MUTUAL"
    assert port["tls"]["caCertificates"] == str(pki.ca)
    assert port["tls"]["subjectAltNames"][0].startswith("spiffe://")
    # The header says when the mesh already provides it.
    assert "already encrypts and authenticates" in output
