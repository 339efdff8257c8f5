"""Issue 23.3 through the real process: `authz serve --export-envoy DIR` whose write fails after
a reload says so (its own reload result, a metric, a log line, a readiness detail) and retries
with backoff until Envoy's copy holds the set in force."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_operations import BOUND, Service


def _policy(path: str) -> str:
    return f"rules:\n  - name: open\n    action: allow\n    to: [{{paths: [{path}]}}]\n"


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {BOUND}s: {what}")
        time.sleep(0.1)


def test_a_failed_export_write_is_visible_and_retried(tmp_path: Path) -> None:
    policies, ecds = tmp_path / "policies", tmp_path / "ecds"
    policies.mkdir()
    (policies / "p.yaml").write_text(_policy("/a"))
    service = Service.on_loopback(
        policies, tmp_path / "stderr.log", "--export-envoy", str(ecds), "--no-watch"
    ).start()
    try:

        def readyz() -> tuple[int, dict[str, str]]:
            status, body = service.get("/readyz")
            return status, json.loads(body).get("envoy_export", {})

        def metric(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
            return service.metrics().get((name, labels), 0.0)

        status, export = readyz()
        first = export["revision"]
        assert (status, export["state"]) == (200, "written")
        assert first in os.readlink(ecds / "..data")

        # The write cannot finish: `..data.tmp` is a directory the writer cannot unlink
        # (root ignores file modes, so no chmod would do).
        (ecds / "..data.tmp" / "blocker").mkdir(parents=True)
        (policies / "p.yaml").write_text(_policy("/b"))
        assert service.process is not None
        service.process.send_signal(signal.SIGHUP)
        export_error = (("result", "export_error"),)
        _eventually(lambda: metric("authz_policy_reloads_total", export_error) == 1, "export_error")
        status, export = readyz()
        assert status == 200  # the service decides right; the detail says Envoy is behind
        assert export["state"] == "behind" and export["revision"] == first
        second = export["in_force"]
        assert second != first and export["error"]
        assert metric("authz_envoy_export_behind") == 1
        assert metric("authz_policy_reloads_total", (("result", "ok"),)) == 0
        assert first in os.readlink(ecds / "..data")  # Envoy still reads the old filters
        _eventually(lambda: metric("authz_envoy_export_failures_total") >= 2, "a retry")
        assert f"Envoy filters for revision {second} could not be written" in service.stderr()

        shutil.rmtree(ecds / "..data.tmp")  # the cause is gone: the next retry writes
        _eventually(lambda: readyz()[1].get("state") == "written", "written after a retry")
        assert readyz()[1]["revision"] == second
        assert second in os.readlink(ecds / "..data")
        assert metric("authz_envoy_export_behind") == 0
        assert f"Envoy filters for revision {second} written to {ecds} (after" in (service.stderr())
    finally:
        assert service.stop() == 0
