"""TLS from Envoy to this service (`authz envoy-config --authz-ca ...`): the ext_authz
cluster's `UpstreamTlsContext`, and, for Istio, the DestinationRule that makes a sidecar
originate it. Pure, like `authz.envoy_bootstrap`: options in, plain dicts out.

Envoy reads certificate files named directly in a cluster once, at start. To rotate without a
restart, name a directory of SDS files instead (`--authz-sds DIR`): `authz-client.yaml` holds
Envoy's client pair (a `Secret` named `authz-client` with a `tls_certificate`) and
`authz-ca.yaml` the CAs that verify the service (`authz-ca`, a `validation_context`), each with
a `watched_directory`; Envoy re-reads them when that directory's `..data` link moves
(cert-manager, Kubernetes Secrets, SPIRE's helper). One Secret per file: Envoy refuses a file
source with more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

Config = dict[str, object]

TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
# The Secrets of the SDS directory (`sds_dir`), each in `<name>.yaml`:
# `resources: [{"@type": ...tls.v3.Secret, name: authz-client, tls_certificate: {...}}]`.
CLIENT_SECRET = "authz-client"
CA_SECRET = "authz-ca"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How Envoy verifies this service and which certificate it presents to it."""

    # The CAs that issue the service's certificate (a PEM file read at start), or a directory
    # of SDS files holding them and Envoy's client pair (re-read when they rotate): one of two.
    ca: str | None = None
    sds_dir: str | None = None
    # The service's expected names (a `spiffe://` URI SAN, else a DNS SAN); empty: any
    # certificate the CA issued is accepted, which trusts everything that CA ever signed.
    sans: Sequence[str] = ()
    client_cert: str | None = None  # with `ca`: Envoy's own certificate (mutual TLS)
    client_key: str | None = None
    sni: str | None = None

    def __post_init__(self) -> None:
        if (self.ca is None) == (self.sds_dir is None):
            raise ValueError("UpstreamTls needs `ca` or `sds_dir`, not both")


def _san_matcher(name: str) -> Config:
    kind = "URI" if name.startswith("spiffe://") else "DNS"
    return {"san_type": kind, "matcher": {"exact": name}}


def _from_sds_dir(directory: str, name: str) -> Config:
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {
                "path": os.path.join(directory, f"{name}.yaml"),
                "watched_directory": {"path": directory},
            },
            "resource_api_version": "V3",
        },
    }


def upstream_tls_socket(tls: UpstreamTls, alpn: Sequence[str]) -> Config:
    """The ext_authz cluster's `transport_socket`: TLS 1.2+ with `alpn` (`h2` for gRPC)."""
    names: Config = {}
    if tls.sans:
        names["match_typed_subject_alt_names"] = [_san_matcher(n) for n in tls.sans]
    common: Config = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "alpn_protocols": list(alpn),
    }
    if tls.sds_dir is not None:
        # The CAs come from their file; the names to match stay here, in the bootstrap.
        common["combined_validation_context"] = {
            "default_validation_context": names,
            "validation_context_sds_secret_config": _from_sds_dir(tls.sds_dir, CA_SECRET),
        }
        common["tls_certificate_sds_secret_configs"] = [_from_sds_dir(tls.sds_dir, CLIENT_SECRET)]
    else:
        common["validation_context"] = {"trusted_ca": {"filename": tls.ca}, **names}
        if tls.client_cert is not None and tls.client_key is not None:
            common["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": tls.client_cert},
                    "private_key": {"filename": tls.client_key},
                }
            ]
    typed: Config = {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": common}
    if tls.sni is not None:
        typed["sni"] = tls.sni
    return {"name": TLS_SOCKET, "typed_config": typed}


def istio_destination_rule(
    tls: UpstreamTls, *, service: str, port: int, namespace: str = "istio-system"
) -> Config:
    """A DestinationRule making every sidecar originate TLS to the service (for a service that
    runs outside the mesh, or without a sidecar, and serves `--tls-cert` itself). The files
    must be mounted in the sidecars (`sidecar.istio.io/userVolumeMount`)."""
    settings: Config = {
        "mode": "MUTUAL" if tls.client_cert is not None else "SIMPLE",
        "caCertificates": tls.ca,
    }
    if tls.client_cert is not None:
        settings["clientCertificate"] = tls.client_cert
        settings["privateKey"] = tls.client_key
    if tls.sans:
        settings["subjectAltNames"] = list(tls.sans)
    if tls.sni is not None:
        settings["sni"] = tls.sni
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "authz-tls", "namespace": namespace},
        "spec": {
            "host": service,
            "trafficPolicy": {
                "portLevelSettings": [{"port": {"number": port}, "tls": settings}],
            },
        },
    }
