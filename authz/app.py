"""Assembles the running service from Settings: policies, keys, identity, engine, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from authz.config import Settings
from authz.engine import Engine
from authz.identity import IdentityResolver, KeyRegistry
from authz.policy import PolicyStore, load_policy_set
from authz.reload import PolicyReloader
from authz.server import AuthorizationService, build_server, run_until_signalled, set_serving

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

    def close(self) -> None:
        if self.reloader is not None:
            self.reloader.close()
        self.keys.close()


def build_app(settings: Settings) -> App:
    """Load and compile the policies (raising PolicyError when they are bad) and wire it all."""
    policy_set = load_policy_set(settings.policies)
    store = PolicyStore(policy_set)
    keys = KeyRegistry()
    keys.ensure(policy_set.jwt_providers)
    resolver = IdentityResolver(settings, keys)
    engine = Engine(store, resolver, settings.headers)
    service = AuthorizationService(engine, settings)
    log.info(
        "policies loaded from %s: %d rules, revision %s",
        settings.policies,
        policy_set.rule_count,
        policy_set.revision,
    )
    reloader = PolicyReloader(settings.policies, store, keys)
    return App(settings, store, keys, engine, service, reloader)


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
    server, health_servicer = build_server(app.service, listen)
    await server.start()
    if app.reloader is not None:
        app.reloader.start(watch=watch, polling=poll_policies)
    await set_serving(health_servicer, False)
    log.info("listening on %s", ", ".join(listen))
    ready = await asyncio.to_thread(app.keys.wait_ready, key_wait_seconds)
    if not ready:
        log.warning("serving without every JWT key set: %s", app.keys.status())
    await set_serving(health_servicer, True)
    try:
        await run_until_signalled(
            server,
            health_servicer,
            on_reload=app.reloader.request_reload if app.reloader is not None else None,
        )
    finally:
        app.close()
