"""PolicyReloader against real files: swap on a good set, keep the last good set otherwise."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

import pytest

from authz.identity import KeyRegistry
from authz.policy import PolicyStore, load_policy_set
from authz.policy.language.spec import JwtProvider
from authz.reload import PolicyReloader, directory_fingerprint
from tests.support.files import write

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
def setup(tmp_path: Path) -> tuple[Path, PolicyStore, RecordingKeys, PolicyReloader, list[str]]:
    write(tmp_path, "a.yaml", V1)
    store = PolicyStore(load_policy_set(str(tmp_path)))
    keys = RecordingKeys()
    outcomes: list[str] = []
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
    assert outcomes == ["ok"]


def test_invalid_set_is_rejected_and_last_good_stays(setup, caplog):  # type: ignore[no-untyped-def]
    directory, store, keys, reloader, outcomes = setup
    good = store.current
    write(directory, "a.yaml", "rules:\n  - name: half\n    action: al")  # truncated mid-write
    assert reloader.reload() is False
    assert store.current is good
    assert keys.calls == []
    assert outcomes == ["error"]
    assert any("a.yaml:3" in r.getMessage() for r in caplog.records)
    assert any(good.revision in r.getMessage() for r in caplog.records)


def test_unchanged_files_do_not_swap(setup):  # type: ignore[no-untyped-def]
    directory, store, _, reloader, outcomes = setup
    current = store.current
    (directory / "a.yaml").touch()
    assert reloader.reload() is True
    assert store.current is current
    assert outcomes == ["ok"]


def test_a_failing_listener_does_not_stop_reloads(setup):  # type: ignore[no-untyped-def]
    directory, store, _, _, outcomes = setup

    def broken(result: str) -> None:
        raise RuntimeError("metrics down")

    reloader = PolicyReloader(str(directory), store, listeners=[broken, outcomes.append])
    write(directory, "a.yaml", V2)
    assert reloader.reload() is True
    assert outcomes == ["ok"]


@pytest.mark.parametrize("polling", [False, True])
def test_watcher_notices_a_change(setup, polling: bool):  # type: ignore[no-untyped-def]
    directory, store, _, _, _outcomes = setup
    done = threading.Event()
    # Only a successful load counts: the watcher may catch a write half-done (an empty file is
    # rejected), and then loads again once the write is complete.
    reloader = PolicyReloader(
        str(directory),
        store,
        listeners=[lambda result: done.set() if result == "ok" else None],
        poll_interval=0.1,
    )
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


def test_every_outcome_is_logged_including_unchanged(setup, caplog):  # type: ignore[no-untyped-def]
    directory, store, _, reloader, _outcomes = setup
    caplog.set_level(logging.INFO, logger="authz.reload")
    revision = store.current.revision
    assert reloader.reload() is True  # nothing changed
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"revision {revision} unchanged (1 rule) in {directory}" in message
    caplog.clear()
    write(directory, "a.yaml", V2)
    assert reloader.reload() is True
    assert any("policies reloaded from" in r.getMessage() for r in caplog.records)


def test_the_replaced_set_is_freed_by_the_reload(setup):  # type: ignore[no-untyped-def]
    """The reload thread frees the old set (a slice at a time), not whichever check drops the
    last reference to it."""
    directory, store, _, reloader, _outcomes = setup
    old = weakref.ref(store.current)
    write(directory, "a.yaml", V2)
    assert reloader.reload() is True
    assert old() is None


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("rules: " + "[" * 100_000, "nest"),
        ("rules:\n" + "".join(" " * i + "a:\n" for i in range(1, 3000)), "nest"),
    ],
)
def test_deep_nesting_on_reload_keeps_the_last_good_set(  # type: ignore[no-untyped-def]
    setup, caplog, text: str, what: str
):
    directory, store, _, reloader, outcomes = setup
    good = store.current
    (directory / "a.yaml").write_text(text)
    assert reloader.reload() is False
    assert store.current is good and outcomes == ["error"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{directory / 'a.yaml'}:" in m and what in m for m in messages), messages
    assert all(r.exc_info is None for r in caplog.records)  # a clean line, no traceback


def test_a_dangling_policy_on_reload_keeps_the_last_good_set(setup, caplog):  # type: ignore[no-untyped-def]
    directory, store, _, reloader, outcomes = setup
    good = store.current
    (directory / "deny.yaml").symlink_to("/nonexistent")
    assert reloader.reload() is False
    assert store.current is good and outcomes == ["error"]
    assert any(
        f"{directory / 'deny.yaml'}: cannot read: dangling symlink" in r.getMessage()
        for r in caplog.records
    )


def test_a_changed_jwks_file_is_picked_up_by_a_reload(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
        authentication:
          jwt: [{issuer: https://id.example, jwks_file: keys.json}]
        rules: [{name: a, action: allow}]
        """,
    )
    key = '{"keys": [{"kty": "oct", "kid": "%s", "k": "c2VjcmV0"}]}'
    write(tmp_path, "keys.json", key % "old")
    store = PolicyStore(load_policy_set(str(tmp_path)))
    keys = KeyRegistry()
    try:
        keys.ensure(store.current.jwt_providers)
        (provider,) = store.current.jwt_providers
        key_set = keys.key_set(provider)
        assert key_set is not None and key_set.find("old") is not None
        reloader = PolicyReloader(str(tmp_path), store, keys)
        before = store.current.revision
        write(tmp_path, "keys.json", key % "new")
        assert reloader.reload() is True
        assert store.current.revision != before
        key_set = keys.key_set(provider)
        assert key_set is not None and key_set.find("new") is not None
    finally:
        keys.close()


def test_key_files_reload_with_the_policies_and_a_bad_one_keeps_the_last_good_set(
    tmp_path: Path,
) -> None:
    from authz.identity.apikeys import key_hash

    write(
        tmp_path,
        "a.yaml",
        """
        authentication:
          api_keys: [{name: partners, from: [{header: x-api-key}], keys_file: p.keys.yaml}]
        rules: [{name: keyed, action: allow, from: [{api_keys: ["partners/*"]}]}]
        """,
    )
    write(tmp_path, "p.keys.yaml", f"keys: [{{id: one, sha256: {key_hash('1')}}}]\n")
    store = PolicyStore(load_policy_set(str(tmp_path)))
    reloader = PolicyReloader(str(tmp_path), store, None)

    def ids() -> set[str]:
        (provider,) = store.current.for_host("h").authentication.api_key_providers
        return {k.id for k in provider.keys.values()}

    assert ids() == {"one"}
    write(tmp_path, "p.keys.yaml", f"keys: [{{id: two, sha256: {key_hash('2')}}}]\n")
    assert reloader.reload() is True and ids() == {"two"}
    write(tmp_path, "p.keys.yaml", "keys: [{id: three, sha256: the-key-itself}]\n")
    assert reloader.reload() is False and ids() == {"two"}
