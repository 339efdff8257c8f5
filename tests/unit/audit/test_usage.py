"""Usage grouping and bounds, on the example policies and hand-made log records."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from authz.audit.logs import LogReader
from authz.audit.usage import OTHER, BoundedCounter, measure
from authz.logs import JsonFormatter
from authz.policy import load_policy_set

REPO = Path(__file__).resolve().parents[3]


def allowed(rule: str, method: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "decision": "allow",
        "rule": rule,
        "reason": rule,
        "method": method,
        "path": path,
        **extra,
    }


def test_used_paths_are_grouped_under_the_rules_own_patterns() -> None:
    records = [
        allowed("customers-use-cart", "GET", "/api/cart/items"),
        allowed("customers-use-cart", "GET", "/api/cart/items/7"),
        allowed("customers-use-cart", "GET", "/api/cart/items/7/notes/1"),
        allowed("customers-use-cart", "DELETE", "/api/cart/items/8"),
        allowed("frontend-reads-orders", "GET", "/api/orders/1"),  # a {*} pattern: itself
        allowed("health-checks", "GET", "/healthz"),  # an exact pattern: itself
    ]
    usage = measure(load_policy_set(REPO / "policies"), records)
    assert dict(usage.rules["customers-use-cart"].used.counts) == {
        "GET /api/cart/items": 1,
        "GET /api/cart/items/{*}": 1,
        "GET /api/cart/items/{**}": 1,
        "DELETE /api/cart/items/{*}": 1,
    }
    assert dict(usage.rules["frontend-reads-orders"].used.counts) == {"GET /api/orders/{*}": 1}
    assert dict(usage.rules["health-checks"].used.counts) == {"GET /healthz": 1}
    assert [u.rule.name for u in usage.never_matched()] == [
        "no-debug-endpoints",
        "ops-reads-admin",
        "frontend-places-orders",
        "orders-takes-payments",
        "customers-read-own-orders",
        "audit-payment-refunds",
    ]


def test_counters_keyed_by_traffic_stay_bounded() -> None:
    counter = BoundedCounter(limit=3)
    for i in range(100):
        counter.add(f"client-{i}")
    counter.add("client-1")
    assert len(counter.counts) == 4  # three keys and OTHER
    assert counter.counts[OTHER] == 97 and counter.counts["client-1"] == 2


def test_the_services_own_json_log_is_not_read_as_traffic(tmp_path: Path) -> None:
    """`authz usage --decision-log authz.log` given the service's `--log-format json` log by
    mistake: its lines are JSON objects too, but no decision (they counted as anonymous
    denies with reason None)."""
    service_line = JsonFormatter(None, supervisor=False).format(
        logging.LogRecord("authz", logging.INFO, __file__, 1, "serving on :9191", (), None)
    )
    log = tmp_path / "authz.log"
    log.write_text(service_line + "\n" + json.dumps(allowed("a", "GET", "/x")) + "\n")
    reader = LogReader([str(log)])
    assert len(list(reader)) == 1
    assert (reader.records, reader.bad_lines) == (1, 1)
    assert str(reader.bad_examples[0]).endswith(":1: no 'decision': not a decision record")
