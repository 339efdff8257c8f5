"""Assembles the running service from Settings: policies, keys, identity, engine, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from authz.addresses import reachable
from authz.checkpoint import Observer
from authz.config import Settings
from authz.engine import Engine
from authz.envoy_files import EnvoyFiles
from authz.errors import ConfigError
from authz.identity import KeyRegistry
from authz.identity.introspection import Introspector
from authz.identity.sources import ServiceResolver
from authz.interceptors import MetricsInterceptor
from authz.limits import Counter, Limiter, open_counter
from authz.listen import ListenError, describe_os_error, set_socket_access
from authz.observe import AdminServer, DecisionLog, Metrics, readiness_check, token_headers
from authz.observe.admin import Pages
from authz.observe.cert_expiry import PeerCertificateExpiry
from authz.observe.introspection_metrics import IntrospectionMetrics
from authz.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from authz.observe.recent import RecentDecisions
from authz.policy import PolicyStore, load_policy_set
from authz.reload import PolicyReloader
from authz.server import AuthorizationService, Health, Phase, build_server, run_until_signalled
from authz.tls.certs import ServingCertificates
from authz.tls.plan import ADMIN, GRPC, HTTP, tls_plan
from authz.wire.http import HttpListener, HttpMode
from authz.workers import worker_index

if TYPE_CHECKING:
    from authz.http_server import HttpServers
if TYPE_CHECKING:  # imported at run time only with settings.otlp_endpoint
    from authz.observe.tracing import Tracing

log = logging.getLogger("authz")


@dataclass(slots=True)
class App:
    settings: Settings
    store: PolicyStore
    keys: KeyRegistry
    engine: Engine
    service: AuthorizationService
    # Hot reload of settings.policies; others may attach listeners (metrics) before serve().
    reloader: PolicyReloader | None = None
    metrics: Metrics | None = None
    decision_log: DecisionLog | None = None
    # Started by serve() (or by the caller) with start_admin(); None without settings.admin.
    admin: AdminServer | None = None
    # The rate-limit counters (in the process, or Redis with its background thread).
    counter: Counter | None = None
    # With settings.otlp_endpoint only (the module is imported only then).
    tracing: Tracing | None = None
    # The token introspection client (its pool threads, its answer cache).
    introspector: Introspector | None = None
    # The TLS listeners' certificates (authz.tls); None when every listener is plaintext.
    certificates: ServingCertificates | None = None
    # What serve() set up for TLS and close() undoes (private copies of keys among them).
    closers: list[Callable[[], None]] = field(default_factory=list)
    # With settings.export_envoy (worker 0 only): Envoy's copy of the set in force.
    envoy_files: EnvoyFiles | None = None
    # The decision page's ring and token (with settings.admin and settings.decision_page).
    recent: RecentDecisions | None = None
    admin_token: str | None = None
    started_at: float = 0.0

    def start_admin(self, phase: Callable[[], str] = lambda: Phase.SERVING) -> AdminServer | None:
        """Bind and start the admin endpoint when settings.admin is set (raises OSError).
        /readyz is 200 exactly when `phase()` is "serving" (`Health.phase`)."""
        if self.settings.admin is None or self.admin is not None:
            return self.admin
        tls = None
        if self.certificates is not None and ADMIN in self.certificates.plan:
            from authz.tls.contexts import RotatingContext

            tls = RotatingContext(self.certificates, ADMIN)
            self.closers.append(tls.close)
        admin = AdminServer(
            self.settings.admin,
            metrics=self.metrics.render if self.metrics is not None else None,
            metrics_content_type=METRICS_CONTENT_TYPE,
            readiness=readiness_check(
                phase,
                self.keys.status,
                self.counter.status if self.counter is not None else None,
                self.introspector.status if self.introspector is not None else None,
                self.envoy_files.status if self.envoy_files is not None else None,
            ),
            tls=tls,
            pages=self._decision_pages(),
        )
        try:
            admin.start()
        except OSError as error:
            raise ListenError(self.settings.admin, describe_os_error(error)) from error
        self.admin = admin
        return admin

    def _decision_pages(self) -> Pages | None:
        if self.recent is None or self.settings.admin is None:
            return None
        # Imported only with the page on: it reads the authoring and audit tools' explainers.
        from authz.page.access import on_loopback
        from authz.page.routes import DecisionPages
        from authz.page.views import Sources

        store, reloader, counter = self.store, self.reloader, self.counter
        sources = Sources(
            policy=lambda: store.current,
            policy_directory=self.settings.policies,
            started_at=self.started_at,
            last_reload=lambda: reloader.last if reloader is not None else None,
            key_states=self.keys.states,
            rate_limits=counter.status if counter is not None else dict,
            recent=self.recent,
        )
        return DecisionPages(
            sources, token=self.admin_token, open_without_token=on_loopback(self.settings.admin)
        )

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if self.certificates is not None:
            self.certificates.close()
        for close in self.closers:
            close()
        if self.reloader is not None:
            self.reloader.close()
        if self.envoy_files is not None:
            self.envoy_files.close()
        self.keys.close()
        if self.introspector is not None:
            self.introspector.close()
        if self.counter is not None:
            self.counter.close()
        # Last: the checks answered while draining are still logged and traced.
        if self.decision_log is not None:
            self.decision_log.close()
        if self.tracing is not None:
            self.tracing.close()


def build_app(settings: Settings) -> App:
    """Load and compile the policies (raising PolicyError when they are bad) and wire it all."""
    started_at = time.time()
    policy_set = load_policy_set(settings.policies)
    store = PolicyStore(policy_set)
    recent, admin_token = _decision_page(settings)
    decision_log = _decision_log(settings, store, recent)
    # Connects to a Redis in the background: the first checks count locally if it is slow.
    counter = open_counter(settings.rate_limit_store, max_keys=settings.rate_limit_max_keys)
    tracing = _tracing(settings)
    metrics = Metrics(
        policy=lambda: store.current,
        decision_log_dropped=(lambda: decision_log.dropped) if decision_log is not None else None,
        key_states=lambda: keys.states(),
        policy_loaded_at=time.time(),
        rate_limit_store=counter.status,
        trace_spans_dropped=(lambda: tracing.dropped) if tracing is not None else None,
    )
    # The metrics listen before the first fetch, so the start-up JWKS loads are counted too.
    keys = KeyRegistry(on_fetch=metrics.record_fetch)
    if tracing is not None:
        keys.add_fetch_listener(tracing.record_fetch)
    keys.ensure(policy_set.jwt_providers)
    introspection = IntrospectionMetrics(metrics.registry)
    introspector = Introspector(
        on_request=introspection.record_request, on_hit=introspection.record_hit
    )
    resolver = ServiceResolver(settings, keys, introspection=introspector)
    engine = Engine(store, resolver, settings.headers, limiter=Limiter(counter))
    cert_expiry = PeerCertificateExpiry()
    metrics.registry.register(cert_expiry)
    plan = tls_plan(settings)  # ConfigError; the files are read by serve()
    certificates = ServingCertificates(plan) if plan else None
    if certificates is not None:
        metrics.registry.register(certificates)
    observers: list[Observer] = [metrics, cert_expiry]
    if decision_log is not None:
        observers.append(decision_log)
    service = AuthorizationService(engine, settings, observers, tracer=tracing)
    log.info(
        "policies loaded from %s: %d rules, revision %s",
        settings.policies,
        policy_set.rule_count,
        policy_set.revision,
    )
    envoy_files = _envoy_files(settings, store)
    if envoy_files is not None:
        metrics.registry.register(envoy_files)
    reloader = PolicyReloader(
        settings.policies,
        store,
        keys,
        listeners=[metrics.record_reload],
        publish=envoy_files.publish if envoy_files is not None else None,
    )
    return App(
        settings,
        store,
        keys,
        engine,
        service,
        reloader,
        metrics,
        decision_log,
        tracing=tracing,
        counter=counter,
        introspector=introspector,
        certificates=certificates,
        envoy_files=envoy_files,
        recent=recent,
        admin_token=admin_token,
        started_at=started_at,
    )


def _decision_page(settings: Settings) -> tuple[RecentDecisions | None, str | None]:
    """The decision page's ring and bearer token, or (None, None) without the page. Raises
    ConfigError when the token file cannot be read."""
    if settings.admin is None or not settings.decision_page:
        return None, None
    from authz.page.access import read_token

    try:
        token = read_token(settings.admin_token_file)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--admin-token-file: {error}") from error
    return RecentDecisions(settings.recent_decisions, settings.recent_decisions_bytes), token


def _tracing(settings: Settings) -> Tracing | None:
    """`authz.observe.tracing.Tracing` when settings.otlp_endpoint is set, else None (and
    OpenTelemetry is not imported). Raises ConfigError without the `authz[otel]` extra."""
    if settings.otlp_endpoint is None:
        return None
    try:
        from authz.observe.tracing import Tracing
    except ImportError as error:
        raise ConfigError(
            # This Python's own pip: a bare `pip` may be another's, or fetch another `authz`.
            f"--otlp-endpoint needs OpenTelemetry: {sys.executable} -m pip install 'authz[otel]' "
            f"({error})"
        ) from error
    tracing = Tracing.from_settings(settings)
    log.info(
        "tracing: spans to %s, sampling %g of checks without a sampled parent",
        tracing.url,
        settings.trace_sample_ratio,
    )
    return tracing


def _envoy_files(settings: Settings, store: PolicyStore) -> EnvoyFiles | None:
    """With --export-envoy: the set in force written for Envoy (ConfigError when it cannot
    be), and the writer that keeps it so. Under --workers every worker loads the same files;
    worker 0 alone writes Envoy's copy."""
    if settings.export_envoy is None or worker_index() not in (None, 0):
        return None
    envoy_files = EnvoyFiles(settings.export_envoy, svid_only=settings.export_svid_only)
    envoy_files.write_at_start(store.current)
    envoy_files.start(lambda: store.current)
    return envoy_files


def _decision_log(
    settings: Settings, store: PolicyStore, recent: RecentDecisions | None
) -> DecisionLog | None:
    """The started decision log of settings.decision_log (and of the decision page's ring), or
    None when neither is on. Raises ConfigError."""
    if settings.decision_log is None and recent is None:
        return None
    cache: dict[str, Any] = {}

    def secret_token_headers() -> frozenset[str]:
        # The token headers change only with the policy set: recompute once per set. The set is
        # remembered by a weak reference, so a replaced set is not kept alive until the next
        # check (the reloader frees it a slice at a time; a check dropping it would free it whole).
        current = store.current
        remembered = cache.get("set")
        if remembered is None or remembered() is not current:
            cache["headers"] = token_headers(
                [
                    *current.jwt_providers,
                    *current.introspection_providers,
                    *current.api_key_providers,
                ]
            )
            cache["set"] = weakref.ref(current)
        headers: frozenset[str] = cache["headers"]
        return headers

    decision_log = DecisionLog(
        settings.decision_log,
        recent=recent,
        log_headers=settings.log_headers,
        token_headers=secret_token_headers,
    )
    try:
        decision_log.start()
    except OSError as error:
        raise ConfigError(
            f"cannot open the decision log {settings.decision_log}: {error}"
        ) from error
    return decision_log


async def serve(app: App, *, key_wait_seconds: float = 10.0) -> None:
    """Serve `app.settings` until signalled. Readiness (gRPC health SERVING and /readyz 200, one
    truth: `Health.phase`) waits for the first key set of every JWT provider, or
    `key_wait_seconds`, then serves with what it has and logs each provider still without keys.
    Policies reload on SIGHUP and, with `settings.watch`, when the policy directory changes.
    Raises ListenError when an address cannot be bound."""
    settings = app.settings
    certificates = app.certificates
    if certificates is not None:
        certificates.load_all()  # MaterialError (expired, not yet valid, key not the cert's)
    interceptors: list[grpc.ServerInterceptor] = (
        [MetricsInterceptor(app.metrics.rpc)] if app.metrics is not None else []
    )
    credentials = None
    if certificates is not None and GRPC in certificates.plan:
        from authz.tls.serving import grpc_tls

        credentials, peer_check = grpc_tls(certificates)
        interceptors[:0] = peer_check  # first: a refused client reaches nothing else
    # HTTP only (`grpc` off): no gRPC server at all (its threads would serve nothing);
    # `health` is still the one readiness truth for /readyz.
    server: grpc.Server | None = None
    if settings.grpc:
        server, health = build_server(
            app.service, settings, interceptors=interceptors, credentials=credentials
        )
    else:
        health = Health()
    # grpc_health starts with "" SERVING: say STARTING before the first client can ask.
    health.set_phase(Phase.STARTING)
    app.start_admin(lambda: health.phase)
    http: HttpServers | None = None
    if settings.http_listen:
        # Imported only when used: importing granian raises this process's soft open file limit
        # itself, which `authz serve` does (and logs) on its own for the gRPC-only service.
        from authz.http_server import HttpServers

        http_tls = None
        if certificates is not None and HTTP in certificates.plan:
            from authz.tls.serving import http_tls_files

            # Rotations reach `http` once it exists (the lambda reads it when called).
            http_tls, close_copies = http_tls_files(
                certificates, asyncio.get_running_loop(), lambda: http
            )
            app.closers.append(close_copies)
        http = HttpServers.for_engine(
            app.engine,
            settings.limits,
            [(address, http_listener(settings)) for address in settings.http_listen],
            # The same metrics and decision log records as gRPC checks; the span's parent comes
            # from the request's own trace headers (Envoy's http_service client forwards them).
            app.service.observers,
            app.tracing,
            tls=http_tls,
        )
        await http.start()  # raises ListenError
        for address in settings.http_listen:
            if address.startswith("unix:"):
                set_socket_access(address.removeprefix("unix:"), settings)
    if server is not None:
        server.start()
    if app.reloader is not None:
        app.reloader.start(watch=settings.watch, polling=settings.poll_policies)
    if certificates is not None:
        certificates.start()
    ready = await asyncio.to_thread(app.keys.wait_ready, key_wait_seconds)
    if not ready:
        for state in app.keys.states():
            if state.loaded_at is None:
                log.warning(
                    "serving without keys for JWT issuer %s (%s after %gs): its tokens are "
                    "refused with 401 jwt_keys_unavailable until its keys load",
                    state.issuer,
                    state.error or state.state,
                    key_wait_seconds,
                )
    health.set_phase(Phase.SERVING)
    log.info("%s", serving_line(app))
    try:
        await run_until_signalled(
            server,
            health,
            on_reload=lambda: reload_all(app),
            also_stop=http.stop if http is not None else None,
        )
    finally:
        app.close()


def reload_all(app: App) -> None:
    """SIGHUP: the policies and the TLS files are read again (both off the signal handler)."""
    if app.reloader is not None:
        app.reloader.request_reload()
    if app.certificates is not None:
        app.certificates.request_reload()


def http_listener(settings: Settings) -> HttpListener:
    """How every HTTP listener of `settings` reads its requests."""
    return HttpListener(
        mode=HttpMode(settings.http_mode),
        path_prefix=settings.http_path_prefix,
        trust_xfcc=settings.http_trust_xfcc,
    )


def serving_line(app: App) -> str:
    """The one line an operator needs at start: where, which policies, how many processes."""
    # The pure-Python protobuf backend is several times slower per check; say which one runs.
    from google.protobuf.internal import api_implementation

    settings, current = app.settings, app.store.current
    plan = app.certificates.plan if app.certificates is not None else {}
    scheme = "https" if ADMIN in plan else "http"
    # A URL to open: `:9092` (every interface) is reached at loopback.
    admin = f", admin {scheme}://{reachable(settings.admin)}" if settings.admin else ""
    index = worker_index()
    workers = f", worker {index} of {settings.workers}" if index is not None else ""
    where = list(settings.listen) if settings.grpc else []
    if settings.http_listen:
        where.append(f"HTTP ({settings.http_mode}) {', '.join(settings.http_listen)}")
    if plan:
        admin += f"; TLS on the {', '.join(sorted(plan))} listener{'s' if len(plan) > 1 else ''}"
    return (
        f"serving on {', '.join(where)}{admin}: policy revision {current.revision}, "
        f"{current.rule_count} rule{'' if current.rule_count == 1 else 's'} from "
        f"{settings.policies}{workers}, protobuf {api_implementation.Type()}"
    )
