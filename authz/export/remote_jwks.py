"""Remote key sets for jwt_authn: `jwks_uri` and OIDC `discovery` providers as `remote_jwks`,
with a cluster per identity provider (docs/export.md, "Remote key sets").

Envoy fetches the set itself, at start and again every `cache_duration` (async fetch, the same
period the service refreshes at, authz/identity/keys.py), over TLS when the URI is https,
checking the IdP's certificate against the same trust store the service's fetch uses (the
system's, or `SSL_CERT_FILE`). Envoy does not refetch on an unknown `kid`: a rotated key's
tokens are accepted within one cache duration, the service's at once (a documented
difference). `discovery: true` is resolved here, at export time, with the service's own fetcher.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from authz.export.envoy_api import core, jwt
from authz.identity.key_fetch import Fetcher, describe
from authz.identity.keys import FETCH_TIMEOUT_SECONDS, REFRESH_SECONDS
from authz.policy.language.spec import JwtProvider

_MAX_DISCOVERY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RemoteSet:
    """Where a provider's keys are fetched from, and how the export learned it."""

    uri: str
    source: str  # "jwks_uri", or "discovery: <configuration URL>"

    @property
    def cluster(self) -> str:
        parts = urllib.parse.urlsplit(self.uri)
        return f"authz_jwks_{parts.hostname}_{_port(parts)}"


def resolve(p: JwtProvider) -> RemoteSet | None:
    """The remote key set of `p` (None for inline and file sets). Discovery fetches the
    issuer's configuration now; an error raises `ValueError` with the reason."""
    if p.jwks_uri is not None:
        return RemoteSet(p.jwks_uri, "jwks_uri")
    if not p.discovery:
        return None
    fetcher = Fetcher(p, FETCH_TIMEOUT_SECONDS, _MAX_DISCOVERY_BYTES)
    try:
        uri = fetcher.discover()
    except Exception as error:
        raise ValueError(f"discovery: {describe(error)}") from error
    return RemoteSet(uri, f"discovery: {p.issuer.rstrip('/')}/.well-known/openid-configuration")


def remote_jwks(remote: RemoteSet, refresh_seconds: float = REFRESH_SECONDS) -> jwt.RemoteJwks:
    return jwt.RemoteJwks(
        http_uri=core.HttpUri(
            uri=remote.uri,
            cluster=remote.cluster,
            timeout=datetime.timedelta(seconds=FETCH_TIMEOUT_SECONDS),
        ),
        cache_duration=datetime.timedelta(seconds=refresh_seconds),
        # Fetched when the filter starts, refreshed before it expires; a failed fetch is
        # retried after one second, as the service retries soon after a failure.
        async_fetch=jwt.JwksAsyncFetch(failed_refetch_duration=datetime.timedelta(seconds=1)),
    )


def cluster(remote: RemoteSet, ca_file: str | None = None) -> dict[str, Any]:
    """The cluster for the IdP (protobuf JSON): DNS-resolved, TLS with SNI and the IdP's name
    (or IP) checked against its certificate when https."""
    parts = urllib.parse.urlsplit(remote.uri)
    host = parts.hostname or ""
    out: dict[str, Any] = {
        "name": remote.cluster,
        "type": "STATIC" if _is_ip(host) else "LOGICAL_DNS",
        "connect_timeout": f"{FETCH_TIMEOUT_SECONDS:g}s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {
            "cluster_name": remote.cluster,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": host, "port_value": _port(parts)}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if parts.scheme == "https":
        san = {"san_type": "IP_ADDRESS" if _is_ip(host) else "DNS", "matcher": {"exact": host}}
        out["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",  # noqa: E501
                "sni": host,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": ca_file or trust_store()},
                        "match_typed_subject_alt_names": [san],
                    }
                },
            },
        }
    return out


def trust_store() -> str:
    """The CA file the service's fetch trusts (Python's default verify paths)."""
    paths = ssl.get_default_verify_paths()
    return os.environ.get("SSL_CERT_FILE") or paths.cafile or paths.openssl_cafile


def _port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
