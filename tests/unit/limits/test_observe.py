"""The store's state in metrics and /readyz; a 429 in the checks metric."""

from __future__ import annotations

import json

from authz.model import Decision, Verdict
from authz.observe.admin import AdminServer, readiness_check
from authz.observe.metrics import Metrics

DOWN = {"store": "redis", "state": "local", "reason": "ConnectionError", "fallbacks": 2}


def test_metrics_show_the_store_state_and_429s() -> None:
    metrics = Metrics(rate_limit_store=lambda: DOWN)
    metrics(None, Verdict(Decision(False, 429, "cart-per-user"), "id"), 0.001)
    text = metrics.render().decode()
    assert 'authz_rate_limit_store_shared{store="redis"} 0.0' in text
    assert "authz_rate_limit_store_fallbacks_total 2.0" in text
    assert 'reason="rate_limit"' in text and "cart-per-user" not in text


def test_readyz_shows_the_store_and_stays_ready() -> None:
    check = readiness_check(lambda: "serving", lambda: {}, lambda: DOWN)
    admin = AdminServer("127.0.0.1:0", readiness=check)
    status, _, body = admin.respond("/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "phase": "serving", "rate_limits": DOWN}
    assert b'"fallbacks": 2' in body  # a JSON number
