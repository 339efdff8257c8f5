"""Loading a policy directory, and swapping sets in the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authz.errors import PolicyError
from authz.policy import PolicyStore, load_policy_set

RULE = "rules: [{name: %s, action: allow}]\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_loads_yaml_and_yml_recursively_skipping_tests_and_hidden(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", RULE % "a")
    write(tmp_path / "b.yml", RULE % "b")
    write(tmp_path / "sub" / "c.yaml", RULE % "c")
    write(tmp_path / "a_test.yaml", "not: [a policy")
    write(tmp_path / "b_test.yml", "not: [a policy")
    write(tmp_path / ".hidden.yaml", "not: [a policy")
    write(tmp_path / "notes.txt", "ignored")
    p = load_policy_set(str(tmp_path))
    assert sorted(r.name for r in p.rules) == ["a", "b", "c"]
    assert {r.file for r in p.rules} == {
        str(tmp_path / n) for n in ("a.yaml", "b.yml", "sub/c.yaml")
    }


def test_configmap_layout_is_read_once(tmp_path: Path) -> None:
    # kubelet: files live in a timestamped dir, `..data` points at it, top-level names are
    # symlinks through `..data`.
    stamp = tmp_path / "..2024_01_01_00_00_00.123"
    write(stamp / "shop.yaml", RULE % "shop")
    os.symlink(stamp.name, tmp_path / "..data")
    os.symlink("..data/shop.yaml", tmp_path / "shop.yaml")
    p = load_policy_set(str(tmp_path))
    assert [r.name for r in p.rules] == ["shop"]


def test_symlink_loop_is_harmless(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "a.yaml", RULE % "a")
    os.symlink("..", tmp_path / "sub" / "loop")
    assert [r.name for r in load_policy_set(str(tmp_path)).rules] == ["a"]


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(info.value)
    assert "does not exist" in str(info.value)


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "only_test.yaml", RULE % "t")
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    assert "no policy files" in str(info.value) and str(tmp_path) in str(info.value)


def test_one_bad_file_rejects_the_set_with_every_problem(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", RULE % "good")
    write(tmp_path / "bad.yaml", "rules:\n  - {name: x, action: nope}\n")
    write(tmp_path / "worse.yaml", "hostz: []\n")
    write(tmp_path / "binary.yaml", "")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    files = {os.path.basename(p.file) for p in info.value.problems}
    assert files == {"binary.yaml"}  # unreadable files stop before validation
    (tmp_path / "binary.yaml").unlink()
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    assert {os.path.basename(p.file) for p in info.value.problems} == {"bad.yaml", "worse.yaml"}
    assert info.value.reason == "invalid_policy"


def test_jwks_file_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    write(
        tmp_path / "sub" / "a.yaml",
        "authentication: {jwt: [{issuer: https://i, jwks_file: keys.json}]}\n" + RULE % "a",
    )
    (provider,) = load_policy_set(str(tmp_path)).jwt_providers
    assert provider.jwks_file == str((tmp_path / "sub" / "keys.json").resolve())


def test_revision_follows_names_and_contents(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", RULE % "a")
    r1 = load_policy_set(str(tmp_path)).revision
    assert r1 == load_policy_set(str(tmp_path)).revision
    assert len(r1) == 12
    write(tmp_path / "a.yaml", RULE % "b")
    r2 = load_policy_set(str(tmp_path)).revision
    (tmp_path / "a.yaml").rename(tmp_path / "c.yaml")
    r3 = load_policy_set(str(tmp_path)).revision
    assert len({r1, r2, r3}) == 3


def test_store_swaps_whole_sets(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", RULE % "a")
    first = load_policy_set(str(tmp_path))
    store = PolicyStore(first)
    assert store.current is first
    write(tmp_path / "a.yaml", RULE % "b")
    second = load_policy_set(str(tmp_path))
    assert store.swap(second) is first
    assert store.current is second
