"""EnvoyFiles with a writer that fails on demand: status, backoff, and the retry thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from authz import envoy_files
from authz.envoy_files import EnvoyFiles
from authz.errors import ConfigError


@dataclass
class FakeSet:
    revision: str


class Writer:
    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.written: list[str] = []
        self.calls = threading.Semaphore(0)

    def __call__(self, directory: str, policy_set: FakeSet) -> list[str]:
        self.calls.release()
        if self.failure is not None:
            raise self.failure
        self.written.append(policy_set.revision)
        return []


def test_status_backoff_and_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envoy_files, "FIRST_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(envoy_files, "MAX_RETRY_SECONDS", 0.04)
    writer = Writer()
    files = EnvoyFiles("/ecds", writer)
    current = [FakeSet("r1")]
    files.write_at_start(current[0])
    assert files.status() == {"state": "written", "revision": "r1"}
    assert files.publish(current[0]) is True and writer.written == ["r1"]
    files.start(lambda: current[0])
    try:
        writer.failure = OSError(28, "No space left on device", "/ecds/.v-r2-0")
        current[0] = FakeSet("r2")
        while writer.calls.acquire(blocking=False):
            pass
        assert files.publish(current[0]) is False
        status = files.status()
        assert status["state"] == "behind" and status["in_force"] == "r2"
        assert status["revision"] == "r1"
        assert status["error"] == "No space left on device: /ecds/.v-r2-0"
        for _ in range(5):  # retried, the delay doubling up to its cap
            assert writer.calls.acquire(timeout=5)
        assert files.status()["retry_seconds"] == "0.04"
        writer.failure = ValueError("an export bug")  # not only OSError leaves Envoy behind
        assert writer.calls.acquire(timeout=5)
        writer.failure = None
        for _ in range(500):
            if files.status()["state"] == "written":
                break
            time.sleep(0.01)
        assert files.status() == {"state": "written", "revision": "r2"}
        assert writer.written == ["r1", "r2"]
    finally:
        files.close()


def test_a_failure_at_start_refuses_the_start() -> None:
    writer = Writer()
    writer.failure = PermissionError(13, "Permission denied", "/ecds")
    with pytest.raises(ConfigError, match="--export-envoy /ecds: Permission denied: /ecds"):
        EnvoyFiles("/ecds", writer).write_at_start(FakeSet("r1"))
