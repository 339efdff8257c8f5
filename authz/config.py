"""The service's own settings (not policy): what the operator chooses at start.

Flags, a config file and environment variables all end up in one frozen `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """Names of the identity headers sent upstream; the operator may rename them."""

    principal: str = "x-authz-principal"
    request_principal: str = "x-authz-request-principal"
    decision_id: str = "x-authz-decision-id"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on every attribute of a CheckRequest the service reads, checked before anything is
    parsed or cached (authz.wire.inbound). Over a header or path bound: 431 `request_too_large`;
    over any other: 400 `attribute_too_large`. Sizes are UTF-8 bytes. Each is a config key
    (`limits.<name>`, `AUTHZ_LIMITS_<NAME>`).

    Together they bound memory: the largest cache keys (principal, certificate, XFCC, token)
    are these sizes times their caches' entry counts, and gRPC refuses messages over 8 MiB.
    """

    max_headers: int = 200
    max_header_bytes: int = 64 * 1024  # names + values, all headers together
    # Any one header value, after Envoy's repeats are joined: a token, the cookies, XFCC.
    max_header_value_bytes: int = 16 * 1024
    max_path_bytes: int = 8 * 1024  # `:path` including the query
    max_method_bytes: int = 32
    max_host_bytes: int = 1024  # `:authority` as sent, port included
    max_principal_bytes: int = 2 * 1024  # attributes.source.principal
    max_certificate_bytes: int = 16 * 1024  # attributes.source.certificate (URL-encoded PEM)
    # jwt_authn payloads in metadata_context (read only with `jwt_authn_metadata` set): their
    # serialized size and how deeply objects and arrays nest inside one payload.
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 16


@dataclass(frozen=True, slots=True)
class Settings:
    policies: str = "policies"
    listen: str = "127.0.0.1:9191"
    headers: HeaderNames = HeaderNames()
    limits: Limits = Limits()
    # PEM bundle of CAs that issue workload certificates. When set and Envoy sends
    # `attributes.source.certificate`, the certificate is verified and its SAN is the principal.
    ca_bundle: str | None = None
    # `x-forwarded-client-cert` is read only when the operator trusts the proxy that sets it.
    trust_xfcc: bool = False
    # Accept claims verified by Envoy's jwt_authn filter from metadata_context; the value is the
    # filter's metadata namespace (normally "envoy.filters.http.jwt_authn"). None: ignore them.
    jwt_authn_metadata: str | None = None
    # Every address the gRPC server binds (`host:port` or `unix:/path`); `listen` is the first,
    # kept for code that only knows one. `authz.config_file.load_settings` keeps them in step.
    listen_all: tuple[str, ...] = ("127.0.0.1:9191",)
    # The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) as `host:port`; None: off.
    admin: str | None = None
    # Where the decision log goes: a file path, "-" for stdout, None for no decision log.
    decision_log: str | None = None
    # Request headers (lower-case) the decision log may show; secrets are never shown anyway.
    log_headers: tuple[str, ...] = ()
    workers: int = 1
    # Watch the policy directory for changes (else reload on SIGHUP only); by polling.
    watch: bool = True
    poll_policies: bool = False
    log_level: str = "info"
