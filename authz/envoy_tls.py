"""TLS from Envoy to this service (`authz envoy-config --authz-ca ...`): the ext_authz
cluster's `UpstreamTlsContext`, and, for Istio, the DestinationRule that makes a sidecar
originate it. Pure, like `authz.envoy_bootstrap`: options in, plain dicts out.

Envoy reads certificate files named directly in a cluster once, at start. To rotate its client
certificate without a restart, name an SDS file (`--authz-client-sds FILE`): a file holding one
`Secret` whose `tls_certificate` has a `watched_directory`; Envoy re-reads the pair when that
directory's `..data` link moves (cert-manager, Kubernetes Secrets, SPIRE's helper).
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
# The name of the client certificate's Secret inside an SDS file (`sds_file`): a file holding
# `resources: [{"@type": ...tls.v3.Secret, name: authz-client, tls_certificate: {...}}]`.
CLIENT_SECRET = "authz-client"


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How Envoy verifies this service and which certificate it presents to it."""

    ca: str  # PEM bundle of the CAs that issue the service's certificate
    # The service's expected names (a `spiffe://` URI SAN, else a DNS SAN); empty: any
    # certificate the CA issued is accepted, which trusts everything that CA ever signed.
    sans: Sequence[str] = ()
    client_cert: str | None = None  # Envoy's own certificate (mutual TLS), read at start
    client_key: str | None = None
    sds_file: str | None = None  # or: an SDS file holding the client certificate (rotates)
    sni: str | None = None


def _san_matcher(name: str) -> Config:
    kind = "URI" if name.startswith("spiffe://") else "DNS"
    return {"san_type": kind, "matcher": {"exact": name}}


def upstream_tls_socket(tls: UpstreamTls, alpn: Sequence[str]) -> Config:
    """The ext_authz cluster's `transport_socket`: TLS 1.2+ with `alpn` (`h2` for gRPC)."""
    validation: Config = {"trusted_ca": {"filename": tls.ca}}
    if tls.sans:
        validation["match_typed_subject_alt_names"] = [_san_matcher(n) for n in tls.sans]
    common: Config = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "alpn_protocols": list(alpn),
        "validation_context": validation,
    }
    if tls.sds_file is not None:
        common["tls_certificate_sds_secret_configs"] = [
            {
                "name": CLIENT_SECRET,
                "sds_config": {
                    "path_config_source": {
                        "path": tls.sds_file,
                        "watched_directory": {"path": os.path.dirname(tls.sds_file)},
                    },
                    "resource_api_version": "V3",
                },
            }
        ]
    elif tls.client_cert is not None and tls.client_key is not None:
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
