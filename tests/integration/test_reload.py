"""Hot reload in the real service process, under a steady stream of checks.

A marker rule's decision changes between policy versions (allow `marker-v1` -> deny
`marker-v2` -> allow `marker-v3`). A checker thread sends checks for the marker path the whole
time; every answer must belong to a version, versions may only move forward in the order they
were written, and no check may fail. The test waits for each new version by polling the
checker's latest answer (bounded), never by sleeping.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.hostile.service import (
    HOST,
    check_request,
    metadata_reason,
    parse_response,
    response_status,
)
from tests.support.service import CHECK_METHOD, ServiceProcess

BOUND = 20.0  # seconds: how long a reload may take to show, generously


def marker_policy(version: int, action: str) -> str:
    return textwrap.dedent(f"""\
        hosts: [{HOST}]
        rules:
          - name: health
            action: allow
            to: [{{paths: [/healthz]}}]
          - name: marker-v{version}
            action: {action}
            to: [{{paths: ["/marker/{{**}}"]}}]
        """)


VERSIONS = {1: (True, "marker-v1"), 2: (False, "marker-v2"), 3: (True, "marker-v3")}
TRUNCATED = "hosts: [shop.example.com]\nrules:\n  - name: marker-v9\n    action: al"


class Checker:
    """Sends marker checks in a loop on its own channel; records every answer or error."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.answers: list[tuple[bool, str, int]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checker", daemon=True)

    def __enter__(self) -> Checker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        data = check_request("GET", HOST, "/marker/x").SerializeToString()
        with self.service.channel() as channel:
            call = channel.unary_unary(
                CHECK_METHOD, request_serializer=None, response_deserializer=None
            )
            while not self._stop.is_set():
                try:
                    response = parse_response(call(data, timeout=10))
                except grpc.RpcError as error:
                    self.errors.append(error)
                    continue
                status = response_status(response)
                self.answers.append((status == 200, metadata_reason(response), status))

    def latest(self) -> tuple[bool, str, int] | None:
        return self.answers[-1] if self.answers else None

    def wait_for(self, version: int) -> None:
        """Poll until the latest answer is `version`'s (bounded)."""
        allowed, reason = VERSIONS[version]
        deadline = time.monotonic() + BOUND
        seen = len(self.answers)
        while time.monotonic() < deadline:
            latest = self.latest()
            # at least one fresh answer, so an old answer cannot satisfy a new wait
            if len(self.answers) > seen and latest is not None and latest[:2] == (allowed, reason):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(
            f"version {version} not in force after {BOUND}s; latest answer {self.latest()}"
        )

    def assert_consistent(self, written: list[int]) -> None:
        """No errors; every answer belongs to a written version; versions only move forward."""
        assert self.errors == [], self.errors[:3]
        assert self.answers, "the checker never got an answer"
        order = {v: i for i, v in enumerate(written)}
        by_answer = {VERSIONS[v]: v for v in written}
        position = 0
        for allowed, reason, _status in self.answers:
            version = by_answer.get((allowed, reason))
            assert version is not None, f"answer {(allowed, reason)} belongs to no written version"
            assert order[version] >= position, f"went back to version {version}"
            position = order[version]


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    write(directory / "shop.yaml", marker_policy(1, "allow"))
    return directory


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def service(policy_dir: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess(policy_dir) as running:
        yield running


def test_file_changes_reload_without_failing_a_check(
    service: ServiceProcess, policy_dir: Path
) -> None:
    policy = policy_dir / "shop.yaml"
    with Checker(service) as checker:
        checker.wait_for(1)
        write(policy, marker_policy(2, "deny"))
        checker.wait_for(2)

        # A half-written file: rejected, the v2 set stays in force.
        rejections = service.log().count("policy reload rejected")
        write(policy, TRUNCATED)
        wait_until(
            lambda: service.log().count("policy reload rejected") > rejections, "the rejection"
        )
        count = len(checker.answers)
        wait_until(lambda: len(checker.answers) > count + 10, "more checks after the rejection")
        assert checker.latest() is not None and checker.latest()[:2] == VERSIONS[2]

        write(policy, marker_policy(3, "allow"))
        checker.wait_for(3)
    checker.assert_consistent([1, 2, 3])
    log = service.log()
    assert "policies reloaded from" in log and "revision" in log
    assert service.terminate() == 0


def test_new_and_deleted_files_and_renames_are_noticed(
    service: ServiceProcess, policy_dir: Path
) -> None:
    with Checker(service) as checker:
        checker.wait_for(1)
        # a new file whose deny rule wins over the allow of v1
        write(policy_dir / ".extra.tmp", marker_policy(2, "deny").replace("health", "health2"))
        os.rename(policy_dir / ".extra.tmp", policy_dir / "extra.yaml")  # an atomic editor save
        checker.wait_for(2)
        (policy_dir / "extra.yaml").unlink()
        checker.wait_for(1)
    # 1 -> 2 -> 1 here, so only "every answer is one of the two, and nothing failed"
    assert checker.errors == []
    assert {a[:2] for a in checker.answers} <= {VERSIONS[1], VERSIONS[2]}


def test_configmap_symlink_swap_is_noticed(tmp_path: Path) -> None:
    """Kubernetes: `shop.yaml -> ..data/shop.yaml`, `..data -> ..<timestamp>`; an update writes a
    new timestamped directory and renames a new `..data` symlink over the old one."""
    directory = tmp_path / "mount"
    first, second = directory / "..2024_01_01", directory / "..2024_01_02"
    first.mkdir(parents=True)
    second.mkdir()
    write(first / "shop.yaml", marker_policy(1, "allow"))
    (directory / "..data").symlink_to(first.name)
    (directory / "shop.yaml").symlink_to("..data/shop.yaml")
    with ServiceProcess(directory) as service, Checker(service) as checker:
        checker.wait_for(1)
        write(second / "shop.yaml", marker_policy(2, "deny"))
        (directory / "..data_tmp").symlink_to(second.name)
        os.rename(directory / "..data_tmp", directory / "..data")
        checker.wait_for(2)
    checker.assert_consistent([1, 2])


def test_sighup_reloads_when_watching_is_off(policy_dir: Path) -> None:
    with (
        ServiceProcess(policy_dir, extra_args=("--no-watch",)) as service,
        Checker(service) as checker,
    ):
        checker.wait_for(1)
        write(policy_dir / "shop.yaml", marker_policy(2, "deny"))
        os.kill(service.pid, signal.SIGHUP)
        checker.wait_for(2)
    checker.assert_consistent([1, 2])


def admin_answer(service: ServiceProcess) -> tuple[int, str]:
    response = parse_response(
        service.check_bytes(check_request("GET", HOST, "/admin/x").SerializeToString())
    )
    return response_status(response), metadata_reason(response)


def test_an_unreadable_deny_file_does_not_vanish_on_reload(tmp_path: Path) -> None:
    """Issue 10.1: with an allow-all file, replacing `deny.yaml` by a dangling symlink and
    reloading used to drop the deny rule silently (`/admin/x` went from 403 to allowed)."""
    import subprocess
    import sys

    directory = tmp_path / "policies"
    directory.mkdir()
    write(
        directory / "allow.yaml",
        f"hosts: [{HOST}]\nrules:\n  - name: allow-all\n    action: allow\n",
    )
    deny = directory / "deny.yaml"
    write(
        deny,
        f"hosts: [{HOST}]\nrules:\n  - name: no-admin\n    action: deny\n"
        '    to: [{paths: ["/admin/{**}"]}]\n',
    )
    with ServiceProcess(directory, extra_args=("--no-watch",)) as service:
        assert admin_answer(service) == (403, "no-admin")
        rejections = service.log().count("policy reload rejected")
        deny.unlink()
        deny.symlink_to("/nonexistent")
        os.kill(service.pid, signal.SIGHUP)
        wait_until(
            lambda: service.log().count("policy reload rejected") > rejections, "the rejection"
        )
        assert f"{deny}: cannot read: dangling symlink to /nonexistent" in service.log()
        assert admin_answer(service) == (403, "no-admin")  # the last good set is in force
        assert service.terminate() == 0
    validate = subprocess.run(
        [sys.executable, "-m", "authz", "validate", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 1
    assert f"{deny}: cannot read: dangling symlink to /nonexistent" in validate.stdout


def test_deep_nesting_on_reload_is_one_clean_log_line(policy_dir: Path) -> None:
    """Issue 10.6: a reload of deeply nested YAML logged a RecursionError traceback."""
    with ServiceProcess(policy_dir, extra_args=("--no-watch",)) as service:
        rejections = service.log().count("policy reload rejected")
        write(policy_dir / "shop.yaml", "rules: " + "[" * 100_000 + "\n")
        os.kill(service.pid, signal.SIGHUP)
        wait_until(
            lambda: service.log().count("policy reload rejected") > rejections, "the rejection"
        )
        log = service.log()
        assert f"{policy_dir / 'shop.yaml'}:1: YAML: " in log
        assert "Traceback" not in log and "RecursionError" not in log
        assert service.terminate() == 0
