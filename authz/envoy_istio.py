"""Istio config that puts this service in front of a mesh workload: the MeshConfig provider,
the CUSTOM AuthorizationPolicy, and the EnvoyFilter carrying REQUEST_HARDENING to sidecars.

Pure, like `authz.envoy_bootstrap`: options in, plain dicts out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from authz.addresses import AddressError
from authz.envoy_bootstrap import HCM_FILTER, HCM_TYPE, REQUEST_HARDENING, Config, _duration


@dataclass(frozen=True, slots=True)
class IstioOptions:
    """The mesh-wide provider and the CUSTOM policy that uses it."""

    provider: str = "authz"
    service: str = "authz.authz.svc.cluster.local"
    port: int = 9191
    timeout_ms: int = 500
    namespace: str = "shop"
    selector: Mapping[str, str] = field(default_factory=lambda: {"app": "shop"})
    policy_name: str = "ext-authz"


def istio_extension_provider(options: IstioOptions) -> Config:
    """A MeshConfig `extensionProviders` entry. gRPC ext_authz always sends every request header,
    so there is no includeRequestHeadersInCheck here (that field exists only for the HTTP
    provider); the body is not sent because policies never read it."""
    return {
        "name": options.provider,
        "envoyExtAuthzGrpc": {
            "service": options.service,
            "port": options.port,
            "timeout": _duration(options.timeout_ms),
            "failOpen": False,
            "statusOnError": "503",
        },
    }


def istio_mesh_config(options: IstioOptions) -> Config:
    """The snippet to merge into MeshConfig (the `mesh` key of the istio ConfigMap, or
    `meshConfig` in IstioOperator / Helm values)."""
    return {"extensionProviders": [istio_extension_provider(options)]}


def istio_authorization_policy(options: IstioOptions) -> Config:
    """A CUSTOM AuthorizationPolicy: every request to the selected workloads is checked by the
    provider (one empty rule matches every request)."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": options.policy_name, "namespace": options.namespace},
        "spec": {
            "selector": {"matchLabels": dict(options.selector)},
            "action": "CUSTOM",
            "provider": {"name": options.provider},
            "rules": [{}],
        },
    }


def istio_envoy_filter(options: IstioOptions) -> Config:
    """An EnvoyFilter that gives the selected workloads' inbound HTTP connection manager the
    REQUEST_HARDENING settings: Istio has no MeshConfig field for most of them, and a sidecar
    must route and normalize as the service judges, as a standalone Envoy does."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": f"{options.policy_name}-request-hardening",
            "namespace": options.namespace,
        },
        "spec": {
            "workloadSelector": {"labels": dict(options.selector)},
            "configPatches": [
                {
                    "applyTo": "NETWORK_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {"filterChain": {"filter": {"name": HCM_FILTER}}},
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {"typed_config": {"@type": HCM_TYPE, **REQUEST_HARDENING}},
                    },
                }
            ],
        },
    }


def parse_selector(text: str) -> dict[str, str]:
    """`app=shop,tier=web` -> {"app": "shop", "tier": "web"}."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            raise AddressError(f"{text!r}: expected LABEL=VALUE[,LABEL=VALUE]")
        labels[key] = value
    return labels
