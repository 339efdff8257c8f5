"""Which listener serves TLS with which files, from the settings (`--tls-*`, `--http-tls-*`,
`--admin-tls-*`, `--http-plaintext`, `--admin-plaintext`). Pure: no file is read here."""

from __future__ import annotations

from dataclasses import dataclass

from authz.config import Settings
from authz.errors import ConfigError
from authz.tls.clients import ClientAllowList
from authz.tls.material import Files

GRPC, HTTP, ADMIN = "grpc", "http", "admin"


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """One listener's TLS: its files, and the identities its clients must have (empty: any
    client certificate the CA issued, when `files.client_ca` asks for one)."""

    listener: str  # GRPC, HTTP or ADMIN: the `listener` label of the TLS metrics
    files: Files
    allowed: ClientAllowList | None = None


def _pair(cert: str | None, key: str | None, flag: str) -> tuple[str, str] | None:
    if (cert is None) != (key is None):
        missing = f"{flag}-key" if key is None else f"{flag}-cert"
        raise ConfigError(f"{flag}-cert and {flag}-key go together: {missing} is missing")
    return None if cert is None or key is None else (cert, key)


def tls_plan(settings: Settings) -> dict[str, ListenerTls]:
    """The TLS listeners of `settings` by name (ConfigError for settings that do not fit)."""
    shared = _pair(settings.tls_cert, settings.tls_key, "--tls")
    http_own = _pair(settings.http_tls_cert, settings.http_tls_key, "--http-tls")
    admin_own = _pair(settings.admin_tls_cert, settings.admin_tls_key, "--admin-tls")
    if shared is None and settings.tls_client_ca is not None:
        raise ConfigError("--tls-client-ca needs a certificate to serve: --tls-cert and --tls-key")
    if settings.tls_allowed_clients and settings.tls_client_ca is None:
        raise ConfigError("--tls-allowed-client needs --tls-client-ca (mutual TLS)")
    allowed = (
        ClientAllowList(settings.tls_allowed_clients) if settings.tls_allowed_clients else None
    )
    if settings.http_tls_client_ca is not None and (
        settings.http_plaintext or not (http_own or shared)
    ):
        raise ConfigError("--http-tls-client-ca needs the HTTP door to serve TLS (--http-tls-cert)")
    if settings.http_plaintext and http_own is not None:
        raise ConfigError("--http-plaintext and --http-tls-cert contradict each other")
    if settings.admin_tls_client_ca is not None and (
        settings.admin_plaintext or not (admin_own or shared)
    ):
        raise ConfigError("--admin-tls-client-ca needs the admin endpoint to serve TLS")
    if settings.admin_plaintext and admin_own is not None:
        raise ConfigError("--admin-plaintext and --admin-tls-cert contradict each other")
    plan: dict[str, ListenerTls] = {}
    if settings.grpc and shared is not None:
        plan[GRPC] = ListenerTls(GRPC, Files(*shared, settings.tls_client_ca), allowed)
    http = None if settings.http_plaintext else (http_own or shared)
    if settings.http_listen and http is not None:
        if settings.http_tls_client_ca is not None:
            plan[HTTP] = ListenerTls(HTTP, Files(*http, settings.http_tls_client_ca))
        elif allowed is not None:
            # granian verifies the chain but does not show the certificate to the application:
            # an identity it cannot check must not be silently let in.
            raise ConfigError(
                "--tls-allowed-client cannot be enforced by the HTTP door (it does not see the "
                "client certificate's names): give it a CA that issues only to its allowed "
                "clients with --http-tls-client-ca, or serve it with --http-plaintext"
            )
        else:
            plan[HTTP] = ListenerTls(HTTP, Files(*http, settings.tls_client_ca))
    admin = None if settings.admin_plaintext else (admin_own or shared)
    if settings.admin is not None and admin is not None:
        plan[ADMIN] = ListenerTls(ADMIN, Files(*admin, settings.admin_tls_client_ca))
    return plan
