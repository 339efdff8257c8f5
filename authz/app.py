"""Assembles the running service from Settings: policies, keys, identity, engine, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.config import Settings
from authz.engine import Engine
from authz.errors import ConfigError
from authz.identity import IdentityResolver, KeyRegistry
from authz.observe import AdminServer, DecisionLog, Metrics, readiness_check, token_headers
from authz.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from authz.policy import PolicyStore, load_policy_set
from authz.reload import PolicyReloader
from authz.server import (
    AuthorizationService,
    Observer,
    build_server,
    run_until_signalled,
)

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

    def start_admin(self, serving: Callable[[], bool] = lambda: True) -> AdminServer | None:
        """Bind and start the admin endpoint when settings.admin is set (raises OSError).
        `serving` False makes /readyz 503 (starting, or draining on shutdown)."""
        if self.settings.admin is None or self.admin is not None:
            return self.admin
        store, keys = self.store, self.keys
        admin = AdminServer(
            self.settings.admin,
            metrics=self.metrics.render if self.metrics is not None else None,
            metrics_content_type=METRICS_CONTENT_TYPE,
            readiness=readiness_check(
                lambda: store.current, keys.status, draining=lambda: not serving()
            ),
        )
        admin.start()
        self.admin = admin
        return admin

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()
        if self.reloader is not None:
            self.reloader.close()
        self.keys.close()
        # Last: the checks answered while draining are still logged.
        if self.decision_log is not None:
            self.decision_log.close()


def build_app(settings: Settings) -> App:
    """Load and compile the policies (raising PolicyError when they are bad) and wire it all."""
    policy_set = load_policy_set(settings.policies)
    store = PolicyStore(policy_set)
    decision_log = _decision_log(settings, store)
    metrics = Metrics(
        policy=lambda: store.current,
        decision_log_dropped=(lambda: decision_log.dropped) if decision_log is not None else None,
    )
    # The metrics listen before the first fetch, so the start-up JWKS loads are counted too.
    keys = KeyRegistry(on_fetch=metrics.record_fetch)
    keys.ensure(policy_set.jwt_providers)
    resolver = IdentityResolver(settings, keys)
    engine = Engine(store, resolver, settings.headers)
    observers: list[Observer] = [metrics]
    if decision_log is not None:
        observers.append(decision_log)
    service = AuthorizationService(engine, settings, observers)
    log.info(
        "policies loaded from %s: %d rules, revision %s",
        settings.policies,
        policy_set.rule_count,
        policy_set.revision,
    )
    reloader = PolicyReloader(settings.policies, store, keys, listeners=[metrics.record_reload])
    return App(settings, store, keys, engine, service, reloader, metrics, decision_log)


def _decision_log(settings: Settings, store: PolicyStore) -> DecisionLog | None:
    """The started decision log of settings.decision_log, or None. Raises ConfigError."""
    if settings.decision_log is None:
        return None
    cache: dict[str, Any] = {}

    def secret_token_headers() -> frozenset[str]:
        # The token headers change only with the policy set: recompute once per set. The set is
        # remembered by a weak reference, so a replaced set is not kept alive until the next
        # check (the reloader frees it a slice at a time; a check dropping it would free it whole).
        current = store.current
        remembered = cache.get("set")
        if remembered is None or remembered() is not current:
            cache["headers"] = token_headers(current.jwt_providers)
            cache["set"] = weakref.ref(current)
        headers: frozenset[str] = cache["headers"]
        return headers

    decision_log = DecisionLog(
        settings.decision_log,
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


async def serve(
    app: App,
    listen: list[str],
    *,
    key_wait_seconds: float = 10.0,
    watch: bool = True,
    poll_policies: bool = False,
) -> None:
    """Serve until signalled. Readiness (gRPC health SERVING) waits for the first key set of
    every JWT provider, or `key_wait_seconds`, then serves with what it has and says so.
    Policies reload on SIGHUP and, with `watch`, when the policy directory changes."""
    server, health = build_server(app.service, listen)
    app.start_admin(lambda: health.serving)
    await server.start()
    if app.reloader is not None:
        app.reloader.start(watch=watch, polling=poll_policies)
    await health.set(False)
    log.info("listening on %s", ", ".join(listen))
    # The pure-Python protobuf backend is several times slower per check; say which one runs.
    from google.protobuf.internal import api_implementation

    log.info("protobuf backend: %s", api_implementation.Type())
    ready = await asyncio.to_thread(app.keys.wait_ready, key_wait_seconds)
    if not ready:
        log.warning("serving without every JWT key set: %s", app.keys.status())
    await health.set(True)
    try:
        await run_until_signalled(
            server,
            health,
            on_reload=app.reloader.request_reload if app.reloader is not None else None,
        )
    finally:
        app.close()
