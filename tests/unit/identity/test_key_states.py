"""KeyRegistry.states(): what readiness and the key metrics read about each provider."""

from __future__ import annotations

import json
import time
from pathlib import Path

from authz.identity import KeyRegistry
from authz.policy.language.spec import JwtProvider
from tests.support.tokens import jwks, make_key


def test_states_say_ready_stale_and_unavailable_with_the_load_time(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(jwks(make_key("ES256"))), encoding="utf-8")
    missing = tmp_path / "missing.json"
    registry = KeyRegistry(refresh_seconds=3600)
    before = time.time()
    try:
        registry.ensure(
            [
                JwtProvider(issuer="https://good", jwks_file=str(good)),
                JwtProvider(issuer="https://none", jwks_file=str(missing)),
            ]
        )
        states = {s.issuer: s for s in registry.states()}
        assert states["https://good"].state == "ready" and states["https://good"].error is None
        loaded = states["https://good"].loaded_at
        assert loaded is not None and before <= loaded <= time.time()
        none = states["https://none"]
        assert (none.state, none.loaded_at) == ("unavailable", None) and none.error
        assert registry.status()["https://none"].startswith("unavailable: ")
    finally:
        registry.close()
