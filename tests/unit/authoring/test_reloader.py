"""PolicyReloader against real files: swap on a good set, keep the last good set otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from authz.policy import PolicyStore, load_policy_set
from authz.policy.spec import JwtProvider
from authz.reload import PolicyReloader, directory_fingerprint

from .conftest import write

V1 = """
rules:
  - name: marker-v1
    action: allow
    to: [{paths: [/marker]}]
"""
V2 = """
authentication:
  jwt:
    - issuer: https://id.example
      jwks: {keys: [{kty: oct, k: AAAA}]}
rules:
  - name: marker-v2
    action: deny
    to: [{paths: [/marker]}]
"""


class RecordingKeys:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def ensure(self, providers: Iterable[JwtProvider]) -> None:
        self.calls.append([p.issuer for p in providers])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, PolicyStore, RecordingKeys, PolicyReloader, list[bool]]:
    write(tmp_path, "a.yaml", V1)
    store = PolicyStore(load_policy_set(str(tmp_path)))
    keys = RecordingKeys()
    outcomes: list[bool] = []
    reloader = PolicyReloader(str(tmp_path), store, keys, listeners=[outcomes.append])
    return tmp_path, store, keys, reloader, outcomes


def test_valid_change_is_swapped_in_and_keys_follow(setup):  # type: ignore[no-untyped-def]
    directory, store, keys, reloader, outcomes = setup
    before = store.current.revision
    write(directory, "a.yaml", V2)
    assert reloader.reload() is True
    assert store.current.revision != before
    assert [r.name for r in store.current.rules] == ["marker-v2"]
    # the union first (old set's providers + new), then the new set's alone
    assert keys.calls == [["https://id.example"], ["https://id.example"]]
    assert outcomes == [True]


def test_invalid_set_is_rejected_and_last_good_stays(setup, caplog):  # type: ignore[no-untyped-def]
    directory, store, keys, reloader, outcomes = setup
    good = store.current
    write(directory, "a.yaml", "rules:\n  - name: half\n    action: al")  # truncated mid-write
    assert reloader.reload() is False
    assert store.current is good
    assert keys.calls == []
    assert outcomes == [False]
    assert any("a.yaml:3" in r.getMessage() for r in caplog.records)
    assert any(good.revision in r.getMessage() for r in caplog.records)


def test_unchanged_files_do_not_swap(setup):  # type: ignore[no-untyped-def]
    directory, store, _, reloader, outcomes = setup
    current = store.current
    (directory / "a.yaml").touch()
    assert reloader.reload() is True
    assert store.current is current
    assert outcomes == [True]


def test_a_failing_listener_does_not_stop_reloads(setup):  # type: ignore[no-untyped-def]
    directory, _store, _, reloader, outcomes = setup

    def broken(ok: bool) -> None:
        raise RuntimeError("metrics down")

    reloader.add_listener(broken)
    write(directory, "a.yaml", V2)
    assert reloader.reload() is True
    assert outcomes == [True]


@pytest.mark.parametrize("polling", [False, True])
def test_watcher_notices_a_change(setup, polling: bool):  # type: ignore[no-untyped-def]
    directory, store, _, reloader, _outcomes = setup
    done = threading.Event()
    reloader.add_listener(lambda ok: done.set())
    reloader._poll_interval = 0.1
    reloader.start(watch=True, polling=polling)
    try:
        # The watcher may start after our write: keep writing new content until it reacts.
        for attempt in range(50):
            write(directory, "a.yaml", V2 + f"# {attempt}\n")
            if done.wait(0.5):
                break
        assert done.is_set(), "no reload within 25s"
        assert [r.name for r in store.current.rules] == ["marker-v2"]
    finally:
        reloader.close()


def test_configmap_style_symlink_swap_changes_the_fingerprint(tmp_path: Path) -> None:
    """Kubernetes mounts `name -> ..data/name` with `..data -> ..<timestamp>`; an update
    renames a new `..data` symlink over the old one."""
    first, second = tmp_path / "..2024_01", tmp_path / "..2024_02"
    write(first, "a.yaml", V1)
    write(second, "a.yaml", V2)
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    store = PolicyStore(load_policy_set(str(tmp_path)))
    before = directory_fingerprint(str(tmp_path))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    assert directory_fingerprint(str(tmp_path)) != before
    reloader = PolicyReloader(str(tmp_path), store)
    assert reloader.reload() is True
    assert [r.name for r in store.current.rules] == ["marker-v2"]
