"""Metrics: counters move by decision and reason, scrape-time values, the reason label cap."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from authz.model import Decision, Verdict
from authz.observe import metrics as metrics_module
from authz.observe.metrics import Metrics


@dataclass(frozen=True)
class FakePolicy:
    revision: str
    rule_count: int


@dataclass(frozen=True)
class FakeFetch:
    ok: bool


def verdict(allowed: bool, reason: str) -> Verdict:
    return Verdict(Decision(allowed=allowed, status=200 if allowed else 403, reason=reason), "id")


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_checks_by_decision_and_reason_and_latency() -> None:
    m = Metrics()
    m(None, verdict(True, "public"), 0.0002)
    m(None, verdict(True, "public"), 0.0002)
    m(None, verdict(False, "no-admin"), 0.003)
    s = samples(m)
    assert s[("authz_checks_total", (("decision", "allow"), ("reason", "public")))] == 2
    assert s[("authz_checks_total", (("decision", "deny"), ("reason", "no-admin")))] == 1
    assert s[("authz_check_duration_seconds_count", (("decision", "allow"),))] == 2
    assert s[("authz_check_duration_seconds_bucket", (("decision", "deny"), ("le", "0.0025")))] == 0
    assert s[("authz_check_duration_seconds_bucket", (("decision", "deny"), ("le", "0.005")))] == 1


def test_fetches_reloads_and_scrape_time_values() -> None:
    current = [FakePolicy("r1", 3)]
    dropped = [0]
    m = Metrics(policy=lambda: current[0], decision_log_dropped=lambda: dropped[0])
    s = samples(m)
    assert s[("authz_policy_reloads_total", (("result", "error"),))] == 0
    assert s[("authz_policy_rules", ())] == 3
    assert s[("authz_policy_info", (("revision", "r1"),))] == 1
    assert s[("authz_decision_log_dropped_total", ())] == 0

    m.record_fetch("https://id", FakeFetch(True))
    m.record_fetch("https://id", FakeFetch(False))
    m.record_reload(True)
    m.record_reload(False)
    m.record_reload(False)
    current[0] = FakePolicy("r2", 5)
    dropped[0] = 7
    s = samples(m)
    assert s[("authz_jwks_fetches_total", (("issuer", "https://id"), ("result", "ok")))] == 1
    assert s[("authz_jwks_fetches_total", (("issuer", "https://id"), ("result", "error")))] == 1
    assert s[("authz_policy_reloads_total", (("result", "ok"),))] == 1
    assert s[("authz_policy_reloads_total", (("result", "error"),))] == 2
    assert s[("authz_policy_rules", ())] == 5
    assert ("authz_policy_info", (("revision", "r1"),)) not in s
    assert s[("authz_policy_info", (("revision", "r2"),))] == 1
    assert s[("authz_decision_log_dropped_total", ())] == 7


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a(None, verdict(True, "x"), 0.0)
    assert ("authz_checks_total", (("decision", "allow"), ("reason", "x"))) not in samples(b)


def test_reason_labels_are_capped(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(metrics_module, "MAX_REASONS", 3)
    m = Metrics()
    for i in range(10):
        m(None, verdict(False, f"r{i}"), 0.0)
    m(None, verdict(False, "r0"), 0.0)
    s = samples(m)
    reasons = {
        dict(labels)["reason"]: v for (name, labels), v in s.items() if name == "authz_checks_total"
    }
    assert reasons == {"r0": 2, "r1": 1, "r2": 1, "other": 7}
