"""Envoy v3 bootstrap for the HTTP mode: ext_authz `http_service` to the service's HTTP door.

Pure, like `authz.envoy_bootstrap` (whose listener, clusters and notes it reuses): options in,
plain dicts out. What differs from the gRPC bootstrap:

- the ext_authz filter talks HTTP/1.1 to the authz cluster (`http_service`), sends every request
  header (the gRPC mode sees them all too, and policies may match any), and adds
  `x-authz-original-path: %REQ(:PATH)%`, the undecoded target the service judges (see
  `authz.wire.http`); `headers_to_add` overrides a client value of the same name;
- every header of an allow answer reaches the upstream except the transport's own (content-length,
  date, server, ...): the service alone decides which headers it sets (identity headers,
  claims_to_headers, a rewritten cookie), so the Envoy config never has to list the policies'
  header names, and cannot drift from them (a set header Envoy dropped would leave a client's
  spoofed value in place). Only `content-type` and `www-authenticate` reach the client from a
  deny;
- with downstream mTLS, `forward_client_cert_details: SANITIZE_SET`: Envoy drops any client
  `x-forwarded-client-cert` and sets its own, which the service trusts on an HTTP listener
  started with `trust_xfcc` (the HTTP protocol has no peer certificate field).
- the active health check, when asked for, reads each endpoint's admin `/readyz` (every path of
  an envoy-mode listener is an authorization request, so the door itself cannot be probed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from authz.addresses import AddressError
from authz.envoy_bootstrap import (
    AUTHZ_CLUSTER,
    EXT_AUTHZ_FILTER,
    BootstrapOptions,
    Config,
    bootstrap,
    health_check,
)
from authz.envoy_tls import upstream_tls_socket
from authz.envoy_yaml import BOOTSTRAP_NOTES
from authz.wire.http import (
    ENVOY_ADDRESS_HEADER,
    ENVOY_CONTENT_LENGTH_HEADER,
    ENVOY_PATH_HEADER,
    ENVOY_SCHEME_HEADER,
)

# What the HTTP door needs beyond the request's own headers to fill the same request view as
# the gRPC door (docs/http-mode.md lists them for a hand-written config): the undecoded :path,
# the peer address (gRPC's `source.address`), the request's content-length (Envoy's
# authorization request carries its own) and its `:scheme`. Each overrides a client value of
# the same name.
VIEW_HEADERS: list[Config] = [
    {"key": ENVOY_PATH_HEADER, "value": "%REQ(:PATH)%"},
    {"key": ENVOY_ADDRESS_HEADER, "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%"},
    {"key": ENVOY_CONTENT_LENGTH_HEADER, "value": "%REQ(CONTENT-LENGTH)%"},
    {"key": ENVOY_SCHEME_HEADER, "value": "%REQ(:SCHEME)%"},
]
CLIENT_HEADERS = ("content-type", "www-authenticate")
# The headers the HTTP server itself puts on an allow answer (granian: server, date,
# content-length; an allow has no body, so no content-type): copied upstream they would break the
# request (content-length: 0 drops a POST body). Envoy consumes x-envoy-auth-headers-to-remove
# itself, and hop-by-hop headers never reach an upstream request.
TRANSPORT_HEADERS = ("content-length", "date", "server")


def _exact(names: Sequence[str]) -> Config:
    return {"patterns": [{"exact": name, "ignore_case": True} for name in names]}


# Envoy refuses a regex whose RE2 program is over 100 instructions; this many characters of the
# trie-shaped regexes below stay well under it (measured with envoy --mode validate).
_REGEX_CHARS = 150


def any_header_but(excluded: Sequence[str]) -> list[str]:
    """RE2 regexes (full match, any one matching) for every lower-case header name except
    `excluded` and the `:` pseudo-headers. RE2 has no lookahead, so the complement is spelled
    out over the trie of the excluded names: at each node, any other next character, or a
    listed one and the rest; a branch too long for Envoy's RE2 size limit is split in several."""
    trie: dict[str, Any] = {}
    for word in excluded:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # end of an excluded word

    def rest(node: dict[str, Any]) -> str:
        children = sorted(c for c in node if c)
        parts = [] if "" in node else [""]  # the name may end here unless excluded
        others = "".join(re.escape(c) for c in children)
        parts.append(f"[^{others}].*" if others else ".+")
        parts += [re.escape(c) + rest(node[c]) for c in children]
        return "(?:" + "|".join(parts) + ")"

    def split(prefix: str, node: dict[str, Any]) -> list[str]:
        whole = re.escape(prefix) + rest(node)
        if len(whole) <= _REGEX_CHARS:
            return [whole]
        children = sorted(c for c in node if c)
        own = [] if "" in node else [re.escape(prefix)]
        others = "".join(re.escape(c) for c in children)
        own.append(f"{re.escape(prefix)}[^{others}].*")
        return own + [r for c in children for r in split(prefix + c, node[c])]

    first = sorted(trie)
    return [
        f"[^{''.join(re.escape(c) for c in first)}:].*",
        *(r for c in first for r in split(c, trie[c])),
    ]


# With TLS the service's HTTP door rotates its certificate by replacing its worker, whose idle
# keep-alive connections then close; a check Envoy sends on one at that instant meets a reset
# before any answer. Retried once on a new connection, it fails no request (measured: one 503
# in 30 s of rotations without this). A check retried after a reset may have been counted by a
# rate limit already: stricter, never looser.
ROTATION_RETRY: Config = {"retry_on": "reset,connect-failure", "num_retries": 1}


def http_ext_authz_filter(options: BootstrapOptions, *, path_prefix: str = "") -> Config:
    """The ext_authz filter with `http_service`: fail closed, an outage reads as 503."""
    config: Config = {
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
                "authorization_request": {"headers_to_add": VIEW_HEADERS},
                "authorization_response": {
                    "allowed_upstream_headers": {
                        "patterns": [
                            {"safe_regex": {"regex": regex}}
                            for regex in any_header_but(TRANSPORT_HEADERS)
                        ]
                    },
                    "allowed_client_headers": _exact(CLIENT_HEADERS),
                },
            },
            # Every request header, as the gRPC mode sees them all (policies may match any).
            "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
        },
    }
    if options.authz_tls is not None:
        config["typed_config"]["http_service"]["retry_policy"] = ROTATION_RETRY
    return config


def http_bootstrap(
    options: BootstrapOptions, *, path_prefix: str = "", readyz_ports: Sequence[int] = ()
) -> Config:
    """A complete Envoy v3 bootstrap: one listener, ext_authz over HTTP in front of one upstream.

    `readyz_ports`: the admin port (`authz serve --admin`) of each `options.authz` endpoint, in
    the same order; Envoy then health-checks each endpoint's /readyz on that port (every path
    of the HTTP door itself is an authorization request). Empty: no active health check."""
    if readyz_ports and len(readyz_ports) != len(options.authz):
        raise AddressError(
            f"{len(readyz_ports)} readiness ports for {len(options.authz)} authz endpoints: "
            "give one admin port per endpoint, in the same order"
        )
    if readyz_ports and any(e.unix_path is not None for e in options.authz):
        raise AddressError("a unix socket endpoint has no port for its /readyz health check")
    config = bootstrap(replace(options, health_checks=False))
    resources = config["static_resources"]
    chain = resources["listeners"][0]["filter_chains"][0]
    hcm: dict[str, Any] = chain["filters"][0]["typed_config"]
    hcm["http_filters"] = [
        http_ext_authz_filter(options, path_prefix=path_prefix)
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
            if options.authz_tls is not None:
                cluster["transport_socket"] = upstream_tls_socket(options.authz_tls, ("http/1.1",))
            if readyz_ports:
                _health_check_readyz(cluster, readyz_ports)
    return config


def _health_check_readyz(cluster: dict[str, Any], ports: Sequence[int]) -> None:
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    for lb_endpoint, port in zip(endpoints, ports, strict=True):
        lb_endpoint["endpoint"]["health_check_config"] = {"port_value": port}
    # /readyz answers 200 exactly when serving (authz.server.Health): 503 while starting or
    # draining.
    cluster["health_checks"] = [health_check({"http_health_check": {"path": "/readyz"}})]


HTTP_BOOTSTRAP_NOTES: Mapping[str, str] = {
    **BOOTSTRAP_NOTES,
    "headers_to_add": (
        "The undecoded :path, which the service judges (its HTTP server decodes the URL path),\n"
        "the client's address (x-forwarded-for is not it), the request's content-length and\n"
        ":scheme: each overrides any client-sent header of the same name."
    ),
    "allowed_upstream_headers": (
        "Every header the service's allow sets reaches the upstream, except the HTTP transport's\n"
        "own (content-length, date, server, ...): RE2 has no negation, so it is spelled out."
    ),
    "allowed_client_headers": "A deny shows the client its JSON body and the 401 challenge.",
    "health_checks": (
        "Each endpoint's /readyz on its admin port (authz serve --admin): 503 while starting or\n"
        "draining, so Envoy routes around a worker that is not serving."
    ),
    "forward_client_cert_details": (
        "Drop any client-sent x-forwarded-client-cert and set Envoy's own view of the peer:\n"
        "the service reads the workload identity from it (HTTP listener with trust_xfcc)."
    ),
}
