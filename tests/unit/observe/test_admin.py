"""The admin endpoint over real HTTP on a loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from authz.observe.admin import AdminServer, Readiness, readiness_check
from authz.observe.metrics import CONTENT_TYPE, Metrics


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture
def state() -> dict[str, object]:
    return {"ready": Readiness(True)}


@pytest.fixture
def admin(state: dict[str, object]) -> Iterator[AdminServer]:
    metrics = Metrics()
    server = AdminServer(
        "127.0.0.1:0",
        metrics=metrics.render,
        metrics_content_type=CONTENT_TYPE,
        readiness=lambda: state["ready"],  # type: ignore[return-value,arg-type]
    )
    server.start()
    yield server
    server.close()


def test_healthz_metrics_and_404(admin: AdminServer) -> None:
    assert get(admin.port, "/healthz")[0] == 200
    status, content_type, body = get(admin.port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert b"authz_policy_reloads_total" in body
    assert get(admin.port, "/nope")[0] == 404


def test_readyz_follows_readiness(admin: AdminServer, state: dict[str, object]) -> None:
    status, content_type, body = get(admin.port, "/readyz")
    assert (status, content_type, json.loads(body)) == (
        200,
        "application/json",
        {"ready": True, "phase": "serving"},
    )
    state["ready"] = Readiness(False, "starting", {"https://id": "pending"})
    status, _, body = get(admin.port, "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "ready": False,
        "phase": "starting",
        "jwks": {"https://id": "pending"},
    }


def test_a_failing_readiness_is_a_500_not_a_crash(state: dict[str, object]) -> None:
    def boom() -> Readiness:
        raise RuntimeError("bug")

    server = AdminServer("127.0.0.1:0", readiness=boom)
    server.start()
    try:
        assert get(server.port, "/readyz")[0] == 500
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.close()


def test_close_frees_the_port() -> None:
    server = AdminServer("127.0.0.1:0")
    server.start()
    port = server.port
    server.close()
    server.close()  # idempotent
    again = AdminServer(f"127.0.0.1:{port}")
    again.start()  # would raise "address in use" if the first had not let go
    again.close()


def test_readiness_is_the_phase_and_lists_providers_without_fresh_keys() -> None:
    keys = {"https://a": "ready", "https://b": "stale: timeout"}
    phase = ["starting"]
    check = readiness_check(lambda: phase[0], lambda: keys)
    # Starting is not draining (it used to say "draining": true while keys loaded).
    assert check() == Readiness(False, "starting", {"https://b": "stale: timeout"})
    phase[0] = "serving"
    assert check() == Readiness(True, "serving", {"https://b": "stale: timeout"})
    # A provider whose IdP is down does not make a serving pod unready: other routes still work.
    keys["https://c"] = "unavailable: HTTP 500"
    assert check().ready
    assert check().jwks == {"https://b": "stale: timeout", "https://c": "unavailable: HTTP 500"}
    phase[0] = "draining"
    assert check() == Readiness(False, "draining", check().jwks)
