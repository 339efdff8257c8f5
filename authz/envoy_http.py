"""Envoy v3 bootstrap for the HTTP mode: ext_authz `http_service` to the service's HTTP door.

Pure, like `authz.envoy_bootstrap` (whose listener, clusters and notes it reuses): options in,
plain dicts out. What differs from the gRPC bootstrap:

- the ext_authz filter talks HTTP/1.1 to the authz cluster (`http_service`), sends every request
  header (the gRPC mode sees them all too, and policies may match any), and adds
  `x-authz-original-path: %REQ(:PATH)%`, the undecoded target the service judges (see
  `authz.wire.http`); `headers_to_add` overrides a client value of the same name;
- only the service's identity headers (and `cookie`, rewritten when a cookie token must not be
  forwarded) may reach the upstream from an allow, and only `content-type` and
  `www-authenticate` reach the client from a deny;
- with downstream mTLS, `forward_client_cert_details: SANITIZE_SET`: Envoy drops any client
  `x-forwarded-client-cert` and sets its own, which the service trusts on an HTTP listener
  started with `trust_xfcc` (the HTTP protocol has no peer certificate field).
- no active health check: every path on an envoy-mode listener is an authorization request;
  point one at the admin endpoint's `/readyz` when it is enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from authz.envoy_bootstrap import (
    AUTHZ_CLUSTER,
    BOOTSTRAP_NOTES,
    EXT_AUTHZ_FILTER,
    BootstrapOptions,
    Config,
    bootstrap,
)
from authz.wire.http import ENVOY_PATH_HEADER

IDENTITY_HEADERS = ("x-authz-principal", "x-authz-request-principal", "x-authz-decision-id")
CLIENT_HEADERS = ("content-type", "www-authenticate")


def _exact(names: Sequence[str]) -> Config:
    return {"patterns": [{"exact": name, "ignore_case": True} for name in names]}


def http_ext_authz_filter(
    options: BootstrapOptions, *, upstream_headers: Sequence[str] = (), path_prefix: str = ""
) -> Config:
    """The ext_authz filter with `http_service`: fail closed, an outage reads as 503."""
    allowed_upstream = [*IDENTITY_HEADERS, "cookie", *upstream_headers]
    return {
        "name": EXT_AUTHZ_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "http_service": {
                "server_uri": {
                    "uri": f"http://{AUTHZ_CLUSTER}",
                    "cluster": AUTHZ_CLUSTER,
                    "timeout": f"{options.authz_timeout_ms / 1000:g}s",
                },
                "path_prefix": path_prefix,
                "authorization_request": {
                    "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
                    "headers_to_add": [{"key": ENVOY_PATH_HEADER, "value": "%REQ(:PATH)%"}],
                },
                "authorization_response": {
                    "allowed_upstream_headers": _exact(list(dict.fromkeys(allowed_upstream))),
                    "allowed_client_headers": _exact(CLIENT_HEADERS),
                },
            },
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
        },
    }


def http_bootstrap(
    options: BootstrapOptions, *, upstream_headers: Sequence[str] = (), path_prefix: str = ""
) -> Config:
    """A complete Envoy v3 bootstrap: one listener, ext_authz over HTTP in front of one upstream.
    `upstream_headers`: more headers an allow may set upstream (claims_to_headers targets)."""
    config = bootstrap(replace(options, health_checks=False))
    resources = config["static_resources"]
    chain = resources["listeners"][0]["filter_chains"][0]
    hcm: dict[str, Any] = chain["filters"][0]["typed_config"]
    hcm["http_filters"] = [
        http_ext_authz_filter(options, upstream_headers=upstream_headers, path_prefix=path_prefix)
        if f["name"] == EXT_AUTHZ_FILTER
        else f
        for f in hcm["http_filters"]
    ]
    if options.tls is not None:
        hcm["forward_client_cert_details"] = "SANITIZE_SET"
        hcm["set_current_client_cert_details"] = {
            "uri": True,
            "dns": True,
            "subject": True,
            "cert": True,
        }
    for cluster in resources["clusters"]:
        if cluster["name"] == AUTHZ_CLUSTER:
            # HTTP/1.1 with a connection pool: the HTTP door needs no HTTP/2.
            cluster.pop("typed_extension_protocol_options", None)
    return config


HTTP_BOOTSTRAP_NOTES: Mapping[str, str] = {
    **BOOTSTRAP_NOTES,
    "headers_to_add": (
        "The undecoded :path, which the service judges (its HTTP server decodes the URL path);\n"
        "this overrides any client-sent header of the same name."
    ),
    "allowed_upstream_headers": "Only the service's identity headers reach the upstream.",
    "allowed_client_headers": "A deny shows the client its JSON body and the 401 challenge.",
    "forward_client_cert_details": (
        "Drop any client-sent x-forwarded-client-cert and set Envoy's own view of the peer:\n"
        "the service reads the workload identity from it (HTTP listener with trust_xfcc)."
    ),
}
