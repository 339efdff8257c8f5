"""Metrics: counters move by decision and reason, scrape-time values, bounded labels, the
standard collectors and names Prometheus users expect."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.model import Decision, Verdict
from authz.observe.metrics import Metrics
from authz.reasons import CODES, Reason


@dataclass(frozen=True)
class FakePolicy:
    revision: str
    rule_count: int


@dataclass(frozen=True)
class FakeFetch:
    ok: bool


def verdict(allowed: bool, reason: str) -> Verdict:
    """A verdict as the engine gives it: a reason code, or the name of the deciding rule."""
    rule = None if reason in CODES else reason
    status = 200 if allowed else 403
    return Verdict(Decision(allowed=allowed, status=status, reason=reason, rule=rule), "id")


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
    m(None, verdict(False, "jwt_expired"), 0.01)
    s = samples(m)
    # A rule's name goes to the decision log only; the label says a rule decided.
    assert s[("authz_checks_total", (("decision", "allow"), ("reason", "rule")))] == 2
    assert s[("authz_checks_total", (("decision", "deny"), ("reason", "rule")))] == 1
    assert s[("authz_checks_total", (("decision", "deny"), ("reason", "jwt_expired")))] == 1
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
    m.record_reload("ok")
    m.record_reload("error")
    m.record_reload("error")
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
    assert ("authz_checks_total", (("decision", "allow"), ("reason", "rule"))) not in samples(b)


def test_ten_thousand_rules_make_a_bounded_number_of_series() -> None:
    m = Metrics()
    for i in range(10_000):
        m(None, verdict(i % 2 == 0, f"rule-{i}"), 0.0)
    for code in Reason:
        m(None, verdict(False, code), 0.0)
    stray = Decision(allowed=False, status=403, reason="neither-a-code-nor-a-rule")
    m(None, Verdict(stray, "id"), 0.0)  # a bug elsewhere: still one series
    series = {labels for (name, labels) in samples(m) if name == "authz_checks_total"}
    reasons = {dict(labels)["reason"] for labels in series}
    assert reasons == CODES | {"rule", "other"}
    assert len(series) <= 2 * (len(CODES) + 2)


def test_process_platform_and_build_info_without_created_twins() -> None:
    text = Metrics().render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "process_cpu_seconds" in families and "process_resident_memory_bytes" in families
    assert "python_info" in families and "python_gc_objects_collected" in families
    (build,) = families["authz_build_info"].samples
    assert build.labels["python"] == platform.python_version()
    assert build.labels["grpc"] == grpc.__version__ and build.labels["version"]
    assert build.value == 1
    assert not [line for line in text.splitlines() if "_created" in line]


def test_last_successful_reload_time() -> None:
    m = Metrics(policy_loaded_at=1000.0)
    key = ("authz_policy_last_reload_success_timestamp_seconds", ())
    assert samples(m)[key] == 1000.0
    before = time.time()
    m.record_reload("error")
    assert samples(m)[key] == 1000.0
    m.record_reload("ok")
    assert samples(m)[key] >= before


@dataclass(frozen=True)
class FakeKeys:
    issuer: str
    state: str
    loaded_at: float | None


def test_key_set_age_and_state_per_provider() -> None:
    now = time.time()
    keys = [
        FakeKeys("https://a", "ready", now - 30),
        FakeKeys("https://b", "unavailable", None),
        FakeKeys("https://c", "stale", now - 900),
    ]
    s = samples(Metrics(key_states=lambda: keys))
    age = "authz_jwks_key_set_age_seconds"
    assert 30 <= s[(age, (("issuer", "https://a"),))] < 300
    assert 900 <= s[(age, (("issuer", "https://c"),))] < 1200
    assert (age, (("issuer", "https://b"),)) not in s  # no key set, no age
    state = "authz_jwks_state"
    for issuer, current in (("https://a", "ready"), ("https://b", "unavailable")):
        for name in ("ready", "stale", "pending", "unavailable"):
            labels = (("issuer", issuer), ("state", name))
            assert s[(state, labels)] == (1 if name == current else 0)
