"""The service's own settings (not policy): each one declared once, here.

Every field of `Settings` and of its sections (`HeaderNames`, `Limits`) is one setting, and
everything else is derived from the field by `settings_table()`:

- the config-file key is the field name (`limits.max_headers` inside a section);
- the environment variable is `AUTHZ_` + the key upper-cased, dots as `_`
  (`AUTHZ_LIMITS_MAX_HEADERS`);
- the command-line flag is `--` + the key with `-` (`--limits-max-headers`; a boolean also gets
  `--no-...`), unless `setting(flag=...)` names another;
- the value kind (string, list, boolean, integer, seconds, optional) is the annotation;
- help, checks and normalisation come from `setting(...)`.

authz.config_file reads the file, the environment and the flags through this table and
authz.commands.serve builds its argparse flags from it, so adding a setting is adding a field.
A field declared without `setting(...)` is still a full setting (a new `Limits` entry such as
`max_query_bytes: int = 4096` gets its key, variable and flag, and an integer must be >= 1).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz import config_checks as checks

ENV_PREFIX = "AUTHZ_"


@dataclass(frozen=True, slots=True)
class Meta:
    """What a field's type does not say about a setting."""

    help: str = ""
    check: Callable[[Any], None] | None = None
    paths: bool = False  # the check looks at the file system (skipped with check_paths=False)
    flag: str | None = None  # the flag's name when `--key-with-dashes` does not read well
    metavar: str | None = None
    const: str | None = None  # the flag may be given without a value, meaning this one
    lower: bool = False  # case-insensitive names (headers): stored lower-cased
    choices: tuple[str, ...] = ()


def setting(
    default: Any,
    help: str = "",
    *,
    check: Callable[[Any], None] | None = None,
    paths: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
    const: str | None = None,
    lower: bool = False,
    choices: tuple[str, ...] = (),
) -> Any:
    """A dataclass field with its declaration (see `Meta`)."""
    meta = Meta(help, check, paths, flag, metavar, const, lower, choices)
    return field(default=default, metadata={"setting": meta})


def pem_file(help: str) -> Any:
    """An optional PEM file setting (a certificate chain, a private key, CA certificates): the
    file is checked when given; each TLS listener declares its own files with it."""
    return setting(None, help, check=checks.optional_file, paths=True, metavar="FILE")


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """Names of the identity headers sent upstream; the operator may rename them."""

    principal: str = setting(
        "x-authz-principal",
        "header carrying the workload principal",
        check=checks.header,
        lower=True,
    )
    request_principal: str = setting(
        "x-authz-request-principal",
        "header carrying the end user (issuer/subject)",
        check=checks.header,
        lower=True,
    )
    decision_id: str = setting(
        "x-authz-decision-id", "header carrying the decision id", check=checks.header, lower=True
    )
    api_key: str = setting(
        "x-authz-api-key",
        "header carrying the API-key principal (provider/id)",
        check=checks.header,
        lower=True,
    )


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
    # attributes.context_extensions (set per route by the operator, but bounded all the same):
    # how many entries, and their keys and values together.
    max_context_extensions: int = 64
    max_context_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    policies: str = setting(
        "policies", "policy directory", check=checks.directory, paths=True, metavar="DIR"
    )
    # Every address the gRPC server binds.
    listen: tuple[str, ...] = setting(
        ("127.0.0.1:9191",),
        "HOST:PORT or unix:/path; may be repeated",
        check=checks.listen_addresses,
        metavar="ADDRESS",
    )
    # False: HTTP only (`--no-grpc --http-listen ...`); `listen` is then not bound.
    grpc: bool = setting(True, "serve the gRPC Check API on --listen (--no-grpc: HTTP only)")
    # Every address of the HTTP door (authz.wire.http); all of them read requests as `http_mode`.
    http_listen: tuple[str, ...] = setting(
        (),
        "serve the HTTP authorization API (Envoy http_service, nginx auth_request, Traefik "
        "forwardAuth) on HOST:PORT or unix:/path; may be repeated",
        check=checks.optional_listen_addresses,
        metavar="ADDRESS",
    )
    http_mode: str = setting(
        "envoy",
        "how the HTTP listeners read the original request: 'envoy' (ext_authz http_service, "
        "x-authz-original-path) or 'forward-auth' (X-Original-*/X-Forwarded-* set by the proxy)",
        choices=checks.HTTP_MODES,
    )
    http_path_prefix: str = setting(
        "",
        "envoy mode: the http_service path_prefix to strip from the request path",
        check=checks.path_prefix,
        metavar="PREFIX",
    )
    http_trust_xfcc: bool = setting(
        False,
        "HTTP listeners: the workload is the last x-forwarded-client-cert element (only behind "
        "Envoy with forward_client_cert_details: SANITIZE_SET)",
    )
    headers: HeaderNames = HeaderNames()
    limits: Limits = Limits()
    # When set and Envoy sends `attributes.source.certificate`, the certificate is verified and
    # its SAN is the principal.
    ca_bundle: str | None = pem_file("PEM bundle of the CAs that issue workload certificates")
    # `x-forwarded-client-cert` is read only when the operator trusts the proxy that sets it.
    trust_xfcc: bool = setting(
        False, "read x-forwarded-client-cert (only behind a proxy that sets it)"
    )
    # Claims verified by Envoy's jwt_authn filter, from this metadata namespace; None: ignored.
    jwt_authn_metadata: str | None = setting(
        None,
        "accept claims verified by Envoy's jwt_authn filter from this metadata namespace",
        const="envoy.filters.http.jwt_authn",
        metavar="NAMESPACE",
    )
    admin: str | None = setting(
        None,
        "serve /metrics, /healthz and /readyz on HOST:PORT",
        check=checks.admin_address,
        metavar="HOST:PORT",
    )
    # TLS (issue 24, authz.tls): --tls-cert/--tls-key serve the gRPC door, and the HTTP door and
    # the admin endpoint too unless they name their own pair or are told to stay plaintext. The
    # files are watched and re-read on SIGHUP; a new pair serves new connections.
    tls_cert: str | None = pem_file(
        "serve TLS with this PEM certificate chain (gRPC door; the HTTP door and admin too, "
        "unless given their own or --http-plaintext/--admin-plaintext)"
    )
    tls_key: str | None = pem_file("the private key of --tls-cert")
    tls_client_ca: str | None = pem_file(
        "require a client certificate issued by these CAs (mutual TLS) on the gRPC and HTTP doors"
    )
    # Enforced by the gRPC door (grpcio shows the peer's certificate); the HTTP door cannot see
    # it (granian), so with it a dedicated --http-tls-client-ca is required (authz.tls.plan).
    tls_allowed_clients: tuple[str, ...] = setting(
        (),
        "with --tls-client-ca: only clients with this identity (SPIFFE ID or DNS name; "
        "spiffe://td/ns/x/* or *.suffix); may be repeated",
        check=checks.client_identities,
        flag="--tls-allowed-client",
        metavar="ID",
    )
    http_tls_cert: str | None = pem_file("the HTTP door's own certificate chain")
    http_tls_key: str | None = pem_file("the HTTP door's own private key")
    http_tls_client_ca: str | None = pem_file("the HTTP door's own client CAs (mutual TLS)")
    http_plaintext: bool = setting(False, "keep the HTTP door plaintext even with --tls-cert")
    admin_tls_cert: str | None = pem_file("the admin endpoint's own certificate chain")
    admin_tls_key: str | None = pem_file("the admin endpoint's own private key")
    # Kubernetes probes cannot present a client certificate: the admin endpoint asks for one
    # only when told (a scraper with its own certificate), and may stay plaintext instead.
    admin_tls_client_ca: str | None = pem_file(
        "require a client certificate from these CAs on the admin endpoint (not for probes)"
    )
    admin_plaintext: bool = setting(
        False, "keep /metrics, /healthz and /readyz plaintext even with --tls-cert"
    )
    # The decision page on the admin endpoint (authz.page): the recent decisions it keeps.
    decision_page: bool = setting(True, "serve the decision page on --admin (/, /decisions, /api/)")
    recent_decisions: int = setting(
        1000, "decisions the page keeps in memory", check=checks.at_least_one, metavar="N"
    )
    recent_decisions_bytes: int = setting(
        8 * 1024 * 1024,
        "bytes of decision records the page keeps in memory",
        check=checks.at_least_one,
        metavar="BYTES",
    )
    admin_token_file: str | None = setting(
        None,
        "the decision page's bearer token (needed when --admin is off loopback; "
        "or AUTHZ_ADMIN_TOKEN)",
        paths=True,
        metavar="FILE",
    )
    decision_log: str | None = setting(
        None,
        "write one JSON line per check to PATH ('-' for stdout)",
        check=checks.log_path,
        paths=True,
        metavar="PATH",
    )
    log_headers: tuple[str, ...] = setting(
        (),
        "show this request header in the decision log; may be repeated "
        "(credentials and token headers are never shown)",
        check=checks.headers,
        flag="--log-header",
        metavar="NAME",
        lower=True,
    )
    # Envoy enforces the set itself (authz export envoy): written as ECDS files on every accepted
    # change; `authz envoy-config --native --ecds DIR` is the bootstrap that reads them.
    export_envoy: str | None = setting(
        None,
        "write the policy set as Envoy filters (ECDS files) into DIR on every accepted change",
        metavar="DIR",
    )
    export_svid_only: bool = setting(
        False,
        "with --export-envoy: the mesh CA issues SVIDs alone (one URI SAN per certificate), so "
        "allow rules naming principals or namespaces can be exported (docs/export.md)",
    )
    workers: int = setting(1, "worker processes", check=checks.at_least_one, metavar="N")
    # grpcio's sync server: a check holds a thread only while it runs (tens of µs) or waits
    # for a key refetch (at most unknown_kid_wait). 8 measured best on one core (4 is close,
    # 16 loses to GIL hand-offs: docs/benchmarks.md, fast path log); more only helps when many
    # checks wait on refetches at once.
    grpc_threads: int = setting(
        8, "threads serving gRPC calls in each worker", check=checks.at_least_one, metavar="N"
    )
    watch: bool = setting(True, "watch the policy directory (else reload on SIGHUP only)")
    poll_policies: bool = setting(
        False, "watch the policy directory by polling (file systems without change events)"
    )
    log_level: str = setting("info", "log level", choices=checks.LOG_LEVELS)
    log_format: str = setting("text", "log line format", choices=checks.LOG_FORMATS)
    # A connection that has not finished the HTTP/2 preface by then is closed, so connections
    # that never speak cannot pile up until the process runs out of file descriptors.
    handshake_timeout: float = setting(
        10.0,
        "close a connection that has not completed the HTTP/2 handshake after SECONDS",
        check=checks.positive_seconds,
        metavar="SECONDS",
    )
    # Envoy reconnects at once after the GOAWAY; this only reclaims forgotten connections.
    idle_timeout: float = setting(
        300.0,
        "close a connection without any call for SECONDS (with a GOAWAY)",
        check=checks.positive_seconds,
        metavar="SECONDS",
    )
    socket_mode: str | None = setting(
        None,
        "permissions of the unix sockets of --listen and --http-listen, in octal (e.g. 0660)",
        check=checks.file_mode,
        metavar="OCTAL",
    )
    # Where rate-limit counters live: this process (memory), or a Redis/Valkey shared by every
    # replica and worker (authz.limits.shared). Its password: $AUTHZ_RATE_LIMIT_STORE_PASSWORD.
    rate_limit_store: str | None = setting(
        None,
        "count rate limits in this Redis shared by all replicas, instead of in each process: "
        "redis://HOST:PORT/DB, rediss://..., redis+cluster://H1:P1,H2:P2, "
        "redis+sentinel://H1:P1,H2:P2/MASTER",
        check=checks.rate_limit_store,
        metavar="URL",
    )
    # Distinct keys counted per process in the current windows; past it new keys share
    # overflow counters (stricter, never looser). About 200 bytes each (docs/operations.md).
    rate_limit_max_keys: int = setting(1_000_000, "rate-limit keys kept per process", metavar="N")
    # Tracing (issue 19, `pip install authz[otel]`): off, and nothing imported, without an
    # endpoint. Spans follow the caller's sampling decision (W3C or B3 headers); a check
    # without one starts a trace with this probability.
    otlp_endpoint: str | None = setting(
        None,
        "export a span per check over OTLP/HTTP to URL (a URL without a path gets /v1/traces)",
        check=checks.otlp_url,
        metavar="URL",
    )
    trace_sample_ratio: float = setting(
        0.0,
        "share of checks without a sampled parent trace that start a trace (0 to 1)",
        check=checks.ratio,
        metavar="RATIO",
    )
    service_name: str = setting("authz", "service.name of the exported spans", metavar="NAME")
    resource_attributes: tuple[str, ...] = setting(
        (),
        "KEY=VALUE resource attribute of the exported spans; may be repeated",
        check=checks.key_values,
        flag="--resource-attribute",
        metavar="KEY=VALUE",
    )
    socket_group: str | None = setting(
        None,
        "group (name or id) owning the unix sockets of --listen and --http-listen",
        check=checks.group,
        metavar="GROUP",
    )


# -- the table derived from the declarations -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One setting: its key, value type and default, and its declaration."""

    key: str  # "limits.max_headers"
    type: Any  # the resolved annotation: str, int, float, bool, str | None, tuple[str, ...]
    default: Any
    meta: Meta

    @property
    def help(self) -> str:
        return self.meta.help or self.key.replace(".", ": ").replace("_", " ")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.key.replace(".", "-").replace("_", "-")

    @property
    def check(self) -> Callable[[Any], None] | None:
        if self.meta.check is not None:
            return self.meta.check
        if self.meta.choices:
            return checks.one_of(*self.meta.choices)
        if self.type is int:
            return checks.at_least_one  # sizes and counts (the `Limits` fields)
        return None


@functools.cache
def settings_table() -> dict[str, Entry]:
    """Every setting by key, in declaration order."""
    table: dict[str, Entry] = {}

    def add(cls: type[Any], prefix: str, defaults: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, default = hints[f.name], getattr(defaults, f.name)
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                add(kind, f"{prefix}{f.name}.", default)
                continue
            meta = f.metadata.get("setting", Meta())
            table[prefix + f.name] = Entry(prefix + f.name, kind, default, meta)

    add(Settings, "", Settings())
    return table


def sections() -> frozenset[str]:
    """The keys that are mappings of settings in the config file (`headers`, `limits`)."""
    return frozenset(key.split(".")[0] for key in settings_table() if "." in key)


def build_settings(values: Mapping[str, Any]) -> Settings:
    """`Settings` from values by key (checked already); a missing key keeps its default."""
    table = settings_table()

    def value(key: str) -> Any:
        entry = table[key]
        found = values.get(key, entry.default)
        if entry.meta.lower and found is not None:
            found = tuple(v.lower() for v in found) if isinstance(found, tuple) else found.lower()
        return found

    def build(cls: type[Any], prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        kwargs = {
            f.name: build(hints[f.name], f"{prefix}{f.name}.")
            if dataclasses.is_dataclass(hints[f.name])
            else value(prefix + f.name)
            for f in dataclasses.fields(cls)
        }
        return cls(**kwargs)

    settings: Settings = build(Settings, "")
    return settings
