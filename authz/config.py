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
    """Bounds on what a request may carry before it is denied unread (safe defaults)."""

    max_headers: int = 200
    max_header_bytes: int = 64 * 1024  # names + values, all headers together
    max_path_bytes: int = 8 * 1024


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
