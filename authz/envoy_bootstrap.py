"""Envoy v3 bootstrap that puts this service in front of an upstream.

Pure: every function takes options and returns plain dicts/lists ready for YAML. Printing and
file handling live in `authz.commands.envoy_config`; `authz.envoy_yaml.render_yaml` writes them
with the comments that explain the deliberate choices, `authz.envoy_istio` the Istio config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.addresses import Address, AddressError, parse, reachable
from authz.envoy_tls import UpstreamTls, upstream_tls_socket

AUTHZ_CLUSTER = "authz"
UPSTREAM_CLUSTER = "upstream"
# The gRPC service name the health checker asks about; the server marks it SERVING when ready.
AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

Config = dict[str, Any]


def parse_endpoint(text: str, *, allow_unix: bool = True) -> Address:
    """An address `authz serve --listen` takes; Envoy is given unix socket paths absolute.
    `:PORT` (a service listening on every interface) is reached on this machine's loopback."""
    endpoint = parse(reachable(text), allow_unix=allow_unix)
    if endpoint.unix_path is not None and not endpoint.unix_path.startswith("/"):
        raise AddressError(f"{text!r}: a unix socket path must be absolute")
    return endpoint


def _envoy_address(endpoint: Address) -> Config:
    if endpoint.unix_path is not None:
        return {"pipe": {"path": endpoint.unix_path}}
    return {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths Envoy reads for downstream mTLS."""

    server_cert: str
    server_key: str
    client_ca: str


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    """Everything `authz envoy-config` can vary."""

    authz: Sequence[Address] = field(default_factory=lambda: (Address("127.0.0.1", 9191),))
    upstream: Address = field(default_factory=lambda: Address("127.0.0.1", 8000))
    listen_address: str = "0.0.0.0"
    listen_port: int = 8080
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    tls: TlsFiles | None = None
    # ext_authz answers in well under a millisecond; the bound is for a stalled service, and
    # a stalled check fails closed with status_on_error.
    authz_timeout_ms: int = 500
    connect_timeout_ms: int = 250
    # A bound on open client connections, so a flood exhausts a counter, not file descriptors.
    max_connections: int = 50000
    # Active gRPC health checks let Envoy route around a dead worker or replica.
    health_checks: bool = True
    # Routes (path prefix, context_extensions) placed before the catch-all "/" route: each
    # sends its entries to the service as `attributes.context_extensions` (`when: context`).
    route_contexts: Sequence[tuple[str, Mapping[str, str]]] = ()
    # --native: Envoy enforces the exported filters read from this directory (ECDS); ext_authz
    # only for the hosts whose files Envoy cannot enforce alone.
    ecds_dir: str | None = None
    # TLS from Envoy to this service (`authz serve --tls-cert`), authz.envoy_tls.
    authz_tls: UpstreamTls | None = None


# The filters `authz export envoy` makes, in order, with their config types: the ECDS names
# `authz serve --export-envoy DIR` writes and `authz envoy-config --native` reads.
_T = "type.googleapis.com/envoy.extensions.filters.http."
EXPORTED_FILTERS: tuple[tuple[str, str], ...] = (
    ("authz.strip", _T + "header_mutation.v3.HeaderMutation"),
    # RBAC DENY on what jwt_authn would read differently from the service (token spellings):
    # before jwt_authn, which removes the token header it verified.
    ("authz.tokens", _T + "rbac.v3.RBAC"),
    ("authz.jwt_authn", _T + "jwt_authn.v3.JwtAuthentication"),
    ("authz.deny", _T + "rbac.v3.RBAC"),
    ("authz.allow", _T + "rbac.v3.RBAC"),
    ("authz.audit", _T + "rbac.v3.RBAC"),
)
# --hybrid adds, before authz.audit: the LOG filter marking requests ext_authz must decide
# (hosts whose files Envoy cannot enforce alone) and ext_authz, enabled only for those.
HYBRID_FILTERS: tuple[tuple[str, str], ...] = (
    ("authz.route", _T + "rbac.v3.RBAC"),
    ("authz.ext_authz", _T + "ext_authz.v3.ExtAuthz"),
)


# What `authz serve --export-envoy` writes: the hybrid export, whatever the set (hosts Envoy
# cannot decide alone go to ext_authz), so every accepted set can be written.
ECDS_FILTERS = (*EXPORTED_FILTERS[:-1], *HYBRID_FILTERS, EXPORTED_FILTERS[-1])


def ecds_files(directory: str) -> list[str]:
    """The files Envoy reads the exported filters from (`authz serve --export-envoy` writes)."""
    directory = os.path.abspath(directory)
    return [os.path.join(directory, f"{name}.yaml") for name, _ in ECDS_FILTERS]


def ecds_http_filters(directory: str) -> list[Config]:
    """HCM `http_filters` entries that read the exported filters from `directory` (ECDS files
    written by `authz serve --export-envoy`; Envoy reloads them when the directory's `..data`
    link moves). Its ext_authz filter calls the `authz` cluster."""
    directory = os.path.abspath(directory)
    return [
        {
            "name": name,
            "config_discovery": {
                "config_source": {
                    "path_config_source": {
                        "path": path,
                        "watched_directory": {"path": directory},
                    },
                },
                "type_urls": [type_url],
            },
        }
        for (name, type_url), path in zip(ECDS_FILTERS, ecds_files(directory), strict=True)
    ]


# The clusters the exported filters name (remote JWKS servers), a CDS file beside the filters.
CLUSTERS_FILE = "authz.clusters.yaml"


def ecds_clusters(directory: str) -> Config:
    """`dynamic_resources` reading the exported clusters from `directory` (CDS, swapped with the
    filters when `..data` moves)."""
    directory = os.path.abspath(directory)
    return {
        "cds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": os.path.join(directory, CLUSTERS_FILE),
                "watched_directory": {"path": directory},
            },
        }
    }


def _duration(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _cluster_type(endpoints: Sequence[Address]) -> str:
    """STATIC for IPs and unix sockets; STRICT_DNS (every A record an endpoint) for names."""
    names = [e for e in endpoints if e.unix_path is None and not e.is_ip]
    if names and any(e.unix_path is not None for e in endpoints):
        raise AddressError("one cluster cannot mix DNS names and unix sockets")
    return "STRICT_DNS" if names else "STATIC"


def _load_assignment(name: str, endpoints: Sequence[Address]) -> Config:
    return {
        "cluster_name": name,
        "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _envoy_address(e)}} for e in endpoints]}
        ],
    }


def authz_cluster(options: BootstrapOptions) -> Config:
    """The cluster of this service's endpoints: HTTP/2 (gRPC), round robin, health checked."""
    if not options.authz:
        raise AddressError("at least one authz endpoint is needed")
    cluster: Config = {
        "name": AUTHZ_CLUSTER,
        "type": _cluster_type(options.authz),
        "connect_timeout": _duration(options.connect_timeout_ms),
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",  # noqa: E501
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": _load_assignment(AUTHZ_CLUSTER, options.authz),
    }
    if options.authz_tls is not None:
        cluster["transport_socket"] = upstream_tls_socket(options.authz_tls, ("h2",))
    if options.health_checks:
        cluster["health_checks"] = [
            health_check({"grpc_health_check": {"service_name": AUTHORIZATION_SERVICE}})
        ]
    return cluster


def health_check(check: Config) -> Config:
    """An active health check of the authz cluster: the timings the gRPC and HTTP modes share,
    and `check` (how to ask)."""
    return {
        "timeout": "1s",
        "interval": "5s",
        # Envoy checks an idle cluster only every 60s by default; a replica that comes back
        # should be noticed sooner.
        "no_traffic_interval": "5s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        **check,
    }


def upstream_cluster(options: BootstrapOptions) -> Config:
    return {
        "name": UPSTREAM_CLUSTER,
        "type": _cluster_type([options.upstream]),
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(UPSTREAM_CLUSTER, [options.upstream]),
    }


def ext_authz_filter(options: BootstrapOptions) -> Config:
    """The ext_authz HTTP filter: fail closed, and an outage reads as 503, never as a deny."""
    typed: Config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": AUTHZ_CLUSTER},
            "timeout": _duration(options.authz_timeout_ms),
        },
        "failure_mode_allow": False,
        "status_on_error": {"code": "ServiceUnavailable"},
    }
    if options.tls is not None:
        typed["include_peer_certificate"] = True
    return {"name": EXT_AUTHZ_FILTER, "typed_config": typed}


ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% authority=%REQ(:AUTHORITY)% "
    "decision=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)% "
    "reason=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)% "
    "principal=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:principal)% "
    "peer=%DOWNSTREAM_PEER_URI_SAN% duration=%DURATION%ms\n"
)


def access_log() -> Config:
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",  # noqa: E501
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
        },
    }


# The HTTP connection manager settings every Envoy in front of this service needs, declared once:
# `authz envoy-config` (plain, mTLS and the Istio EnvoyFilter), `authz demo`, and checked against
# deploy/envoy/envoy.yaml and the README by tests. Why each one: authz/envoy_yaml.py
# BOOTSTRAP_NOTES.
REQUEST_HARDENING: Mapping[str, Any] = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
    "strip_any_host_port": True,
    "strip_trailing_host_dot": True,
    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
}


def http_connection_manager(options: BootstrapOptions) -> Config:
    typed: Config = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        "use_remote_address": True,
        **REQUEST_HARDENING,
        "common_http_protocol_options": {
            "idle_timeout": "300s",
            **REQUEST_HARDENING["common_http_protocol_options"],
        },
        "request_headers_timeout": "10s",
        "stream_idle_timeout": "60s",
        "access_log": [access_log()],
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "protected",
                    "domains": ["*"],
                    "routes": [
                        *(context_route(p, c) for p, c in _longest_first(options)),
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "30s"},
                        },
                    ],
                }
            ],
        },
        "http_filters": [
            *(
                ecds_http_filters(options.ecds_dir)
                if options.ecds_dir is not None
                else [ext_authz_filter(options)]
            ),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    if options.tls is not None:
        typed["forward_client_cert_details"] = "SANITIZE"
    return {"name": HCM_FILTER, "typed_config": typed}


def downstream_tls(tls: TlsFiles) -> Config:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",  # noqa: E501
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": tls.server_cert},
                        "private_key": {"filename": tls.server_key},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": tls.client_ca}},
            },
        },
    }


def bootstrap(options: BootstrapOptions) -> Config:
    """A complete Envoy v3 bootstrap: one listener, ext_authz in front of one upstream."""
    chain: Config = {"filters": [http_connection_manager(options)]}
    if options.tls is not None:
        chain["transport_socket"] = downstream_tls(options.tls)
    # File-based config sources (ECDS, an SDS file) need a node identity.
    node: Config = {"node": {"id": "authz-native", "cluster": "authz-native"}}
    return {
        **(node if options.ecds_dir is not None or _reads_sds_files(options) else {}),
        **(
            {"dynamic_resources": ecds_clusters(options.ecds_dir)}
            if options.ecds_dir is not None
            else {}
        ),
        "admin": {
            "address": {
                "socket_address": {
                    "address": options.admin_address,
                    "port_value": options.admin_port,
                }
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "protected",
                    "address": {
                        "socket_address": {
                            "address": options.listen_address,
                            "port_value": options.listen_port,
                        }
                    },
                    "filter_chains": [chain],
                }
            ],
            "clusters": [authz_cluster(options), upstream_cluster(options)],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": options.max_connections,
                    },
                }
            ]
        },
    }


def _reads_sds_files(options: BootstrapOptions) -> bool:
    return options.authz_tls is not None and options.authz_tls.sds_dir is not None


def _longest_first(options: BootstrapOptions) -> list[tuple[str, Mapping[str, str]]]:
    # Envoy takes the first route that matches: a longer prefix must come first.
    return sorted(options.route_contexts, key=lambda rc: -len(rc[0]))


def context_route(prefix: str, context: Mapping[str, str]) -> Config:
    """A route whose checks carry `context` (ExtAuthzPerRoute.check_settings)."""
    return {
        "match": {"prefix": prefix},
        "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "30s"},
        "typed_per_filter_config": {
            EXT_AUTHZ_FILTER: {
                "@type": (
                    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
                ),
                "check_settings": {"context_extensions": dict(context)},
            }
        },
    }


def parse_route_context(text: str) -> tuple[str, dict[str, str]]:
    """`/partners:api=partners,tier=b2b` -> ("/partners", {"api": "partners", "tier": "b2b"})."""
    prefix, colon, pairs = text.partition(":")
    if not prefix.startswith("/") or not colon or not pairs:
        raise AddressError(f"--route-context {text!r}: write PREFIX:KEY=VALUE[,KEY=VALUE...]")
    context: dict[str, str] = {}
    for pair in pairs.split(","):
        key, eq, value = pair.partition("=")
        if not key or not eq:
            raise AddressError(f"--route-context {text!r}: {pair!r} is not KEY=VALUE")
        context[key] = value
    return prefix, context
