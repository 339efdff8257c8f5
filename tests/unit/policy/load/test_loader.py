"""Loading a policy directory, and swapping sets in the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authz.errors import PolicyError
from authz.policy import PolicyStore, load_policy_set

RULE = "rules: [{name: %s, action: allow}]\n"
JWKS_A = '{"keys": [{"kty": "oct", "kid": "a", "k": "c2VjcmV0LWE"}]}'
JWKS_B = '{"keys": [{"kty": "oct", "kid": "b", "k": "c2VjcmV0LWI"}]}'


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
    write(tmp_path / "sub" / "keys.json", JWKS_A)
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


# --- fail closed: an entry named like a policy file that cannot be read rejects the set ----


def only_problem(directory: Path) -> tuple[str, str]:
    """(file, message) of the one problem loading `directory` gives."""
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(directory))
    (problem,) = info.value.problems
    return problem.file, problem.message


def test_dangling_symlink_rejects_the_set(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.symlink("/nonexistent", tmp_path / "deny.yaml")
    file, message = only_problem(tmp_path)
    assert file == str(tmp_path / "deny.yaml")
    assert message == "cannot read: dangling symlink to /nonexistent"


@pytest.mark.parametrize("target", ["deny.yaml", "other.yaml"])
def test_symlink_loop_rejects_the_set(tmp_path: Path, target: str) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.symlink(target, tmp_path / "deny.yaml")
    if target == "other.yaml":
        os.symlink("deny.yaml", tmp_path / "other.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    assert str(tmp_path / "deny.yaml") in {p.file for p in info.value.problems}
    assert {p.message for p in info.value.problems} == {"cannot read: symlink loop"}


def test_directory_named_like_a_policy_rejects_the_set(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    write(tmp_path / "deny.yaml" / "inner.yaml", RULE % "inner")
    assert only_problem(tmp_path) == (
        str(tmp_path / "deny.yaml"),
        "a directory, not a policy file",
    )


def test_fifo_rejects_the_set_without_blocking(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.mkfifo(tmp_path / "deny.yaml")  # opening it for reading would wait for a writer
    assert only_problem(tmp_path) == (str(tmp_path / "deny.yaml"), "not a regular file (a fifo)")


def test_device_rejects_the_set(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.symlink("/dev/null", tmp_path / "deny.yaml")
    assert only_problem(tmp_path) == (
        str(tmp_path / "deny.yaml"),
        "not a regular file (a device)",
    )


def test_a_file_that_fails_to_read_rejects_the_set(tmp_path: Path) -> None:
    # /proc/self/mem is a regular file that every read at offset 0 fails with EIO, even as
    # root (who reads files whatever their permission bits).
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.symlink("/proc/self/mem", tmp_path / "deny.yaml")
    file, message = only_problem(tmp_path)
    assert file == str(tmp_path / "deny.yaml")
    assert message.startswith("cannot read: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_rejects_the_set(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    write(tmp_path / "deny.yaml", RULE % "deny").chmod(0)
    assert only_problem(tmp_path) == (str(tmp_path / "deny.yaml"), "cannot read: Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories whatever their mode")
def test_unlistable_subdirectory_rejects_the_set(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    write(tmp_path / "sub" / "deny.yaml", RULE % "deny")
    (tmp_path / "sub").chmod(0)
    try:
        file, message = only_problem(tmp_path)
    finally:
        (tmp_path / "sub").chmod(0o755)
    assert (file, message) == (str(tmp_path / "sub"), "cannot list directory: Permission denied")


def test_broken_entries_that_are_not_policies_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "allow.yaml", RULE % "allow-all")
    os.symlink("/nonexistent", tmp_path / "notes.txt")
    os.symlink("/nonexistent", tmp_path / "deny_test.yaml")  # a policy test, not a policy
    os.symlink("/nonexistent", tmp_path / ".hidden.yaml")
    os.mkfifo(tmp_path / "pipe")
    assert [r.name for r in load_policy_set(str(tmp_path)).rules] == ["allow-all"]


def test_configmap_with_a_dangling_visible_name_is_rejected(tmp_path: Path) -> None:
    # kubelet's layout, with `deny.yaml` pointing through `..data` at a file that is not there
    stamp = tmp_path / "..2024_01_01_00_00_00.123"
    write(stamp / "allow.yaml", RULE % "allow-all")
    os.symlink(stamp.name, tmp_path / "..data")
    os.symlink("..data/allow.yaml", tmp_path / "allow.yaml")
    os.symlink("..data/deny.yaml", tmp_path / "deny.yaml")
    assert only_problem(tmp_path) == (
        str(tmp_path / "deny.yaml"),
        "cannot read: dangling symlink to ..data/deny.yaml",
    )


def test_configmap_data_swap_loads_the_new_files(tmp_path: Path) -> None:
    first, second = tmp_path / "..2024_01_01", tmp_path / "..2024_01_02"
    write(first / "shop.yaml", RULE % "v1")
    write(second / "shop.yaml", RULE % "v2")
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/shop.yaml", tmp_path / "shop.yaml")
    assert [r.name for r in load_policy_set(str(tmp_path)).rules] == ["v1"]
    os.symlink(second.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # kubelet's atomic swap
    assert [r.name for r in load_policy_set(str(tmp_path)).rules] == ["v2"]


# --- one file --------------------------------------------------------------------------------


def test_a_single_file_is_a_set_of_one(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", RULE % "a")
    write(tmp_path / "b.yaml", RULE % "b")
    p = load_policy_set(str(tmp_path / "a.yaml"))
    assert [r.name for r in p.rules] == ["a"]
    assert [f.file for f in p.files] == [str(tmp_path / "a.yaml")]


# --- local files a policy names ---------------------------------------------------------------

JWKS_POLICY = """\
authentication:
  jwt:
    - issuer: https://id.example.com
      jwks_file: keys.json
rules: [{name: a, action: allow}]
"""


def test_missing_jwks_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", JWKS_POLICY)
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (str(tmp_path / "a.yaml"), 4)
    assert problem.message == (
        f"jwks_file {tmp_path / 'keys.json'}: cannot read: No such file or directory"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not json", "not a usable JWKS"), ('{"keys": []}', "not a usable JWKS")],
)
def test_unusable_jwks_file_is_a_problem(tmp_path: Path, content: str, expected: str) -> None:
    write(tmp_path / "a.yaml", JWKS_POLICY)
    write(tmp_path / "keys.json", content)
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    (problem,) = info.value.problems
    assert problem.line == 4 and expected in problem.message


def test_jwks_file_that_is_a_directory_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", JWKS_POLICY)
    (tmp_path / "keys.json").mkdir()
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    (problem,) = info.value.problems
    assert problem.line == 4 and problem.message.endswith("cannot read: Is a directory")


def test_jwks_file_content_is_part_of_the_revision(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", JWKS_POLICY)
    write(tmp_path / "keys.json", JWKS_A)
    first = load_policy_set(str(tmp_path)).revision
    assert load_policy_set(str(tmp_path)).revision == first
    write(tmp_path / "keys.json", JWKS_B)
    assert load_policy_set(str(tmp_path)).revision != first


# --- deep nesting is a problem with a line, never a RecursionError ------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "rules: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "rules: " + "{a: " * 100_000 + "}" * 100_000 + "\n",
        "rules:\n" + "".join(" " * i + "a:\n" for i in range(1, 3000)),
        "rules:\n" + "".join(" " * i + "- \n" for i in range(1, 3000)),
    ],
    ids=["brackets", "closed-brackets", "flow-maps", "block-maps", "block-seqs"],
)
def test_deep_nesting_is_a_problem_with_a_line(tmp_path: Path, text: str) -> None:
    write(tmp_path / "deep.yaml", text)
    with pytest.raises(PolicyError) as info:
        load_policy_set(str(tmp_path))
    (problem,) = info.value.problems
    assert problem.file == str(tmp_path / "deep.yaml") and problem.line >= 1
    assert "nest" in problem.message


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    from authz.policy.language.yaml_source import MAX_DEPTH, YSeq, parse_yaml

    node = parse_yaml("f", "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(node, YSeq)
        node = node.items[0]
    assert isinstance(node, YSeq) and node.items == ()


# --- what a reload leaves behind ----------------------------------------------------------------


def test_a_policy_set_holds_no_reference_cycles(tmp_path: Path) -> None:
    """`building` freezes the set (gc.freeze) instead of letting the collector walk it: a cycle
    in a frozen set would never be freed. So: dropping a set frees all of it by refcounting."""
    import gc

    from authz.policy.load.building import building

    write(
        tmp_path / "a.yaml",
        """\
hosts: [shop.example.com]
authentication:
  mtls: {trust_domains: [cluster.local]}
  jwt: [{issuer: https://i, jwks: {keys: [{kty: oct, k: abc}]}}]
roles:
  reader: [{methods: [GET], paths: ["/a/{*}/b", "/c/{**}"]}]
rules:
  - name: r
    action: allow
    from: [{principals: ["*"], not_namespaces: [x], ip_blocks: [10.0.0.0/8]}]
    to: [{role: reader, ports: [80], not_hosts: [a.example.com]}]
    when: [{claim: scope, contains: x}, {header: x-a, not_any_of: [b]}]
""",
    )
    gc.collect()
    with building(keep=False):  # the collector off, as in a real build
        p = load_policy_set(str(tmp_path))
        p.for_host("shop.example.com")  # fills the memo
        del p
        assert gc.collect() == 0


def test_the_sets_problems_come_with_the_files_own_in_one_pass(tmp_path: Path) -> None:
    """`authz validate` reports an undefined role and a rule name used twice together with the
    files' own problems, not only once those are fixed (issue 25.9)."""
    write(
        tmp_path / "a.yaml",
        "rules:\n  - {name: r1, action: allow, to: [{role: nope}]}\n  - {name: r2, action: alow}\n",
    )
    write(
        tmp_path / "b.yaml",
        "roles:\n"
        "  broken: [{paths: [no-slash]}]\n"
        "rules:\n"
        "  - {name: r3, action: allow, to: [{role: missing-too}]}\n"
        "  - {name: r1, action: deny}\n"
        "  - {name: r4, action: allow, to: [{role: broken}]}\n",
    )
    with pytest.raises(PolicyError) as error:
        load_policy_set(str(tmp_path))
    text = [str(p).replace(str(tmp_path) + "/", "") for p in error.value.problems]
    assert "a.yaml:2: undefined role 'nope'" in text
    assert "b.yaml:4: undefined role 'missing-too'" in text
    assert any(t.startswith("a.yaml:3: unknown action 'alow'") for t in text)
    assert any(t.startswith("b.yaml:5: rule name 'r1' is also used at") for t in text)
    assert any(t.startswith("b.yaml:2:") and "no-slash" in t for t in text), text
    # The broken role is defined (its entry is the problem), so its use is not "undefined".
    assert not any("'broken'" in t and "undefined" in t for t in text), text
    assert len(text) == len(set(text)) == 6, text


def test_a_rules_other_problem_and_a_missing_key_file_do_not_hide_the_rest(tmp_path: Path) -> None:
    """A rule with a bad condition still has its undefined role and its name checked, and a
    file with problems still has its `jwks_file` read, in the same pass (issue 25.9)."""
    write(
        tmp_path / "a.yaml",
        "authentication:\n"
        "  jwt: [{issuer: https://i, jwks_file: missing.json}]\n"
        "rules:\n"
        "  - name: r1\n"
        "    action: allow\n"
        "    to: [{role: nope}]\n"
        "    when: [{claim: x, equlas: y}]\n"
        "  - {name: r1, action: deny}\n",
    )
    with pytest.raises(PolicyError) as error:
        load_policy_set(str(tmp_path))
    text = [str(p).replace(str(tmp_path) + "/", "") for p in error.value.problems]
    assert any(t.startswith("a.yaml:7: unknown field 'equlas'") for t in text), text
    assert "a.yaml:6: undefined role 'nope'" in text
    assert any(t.startswith("a.yaml:8: duplicate rule name 'r1'") for t in text), text
    assert any(t.startswith("a.yaml:2: jwks_file ") and "missing.json" in t for t in text), text


def test_a_file_that_is_not_utf8_is_named_with_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"rules:\n  - name: caf\xe9\n    action: allow\n")
    with pytest.raises(PolicyError) as error:
        load_policy_set(str(tmp_path))
    assert [str(p) for p in error.value.problems] == [
        f"{tmp_path}/a.yaml:2: not UTF-8 text (byte 20 is 0xe9)"
    ]


def test_a_test_file_named_as_the_policy_is_called_what_it_is(tmp_path: Path) -> None:
    """`authz validate policies/shop_test.yaml`: not a list of unknown policy fields."""
    test_file = write(tmp_path / "shop_test.yaml", "cases: []\n")
    with pytest.raises(PolicyError) as error:
        load_policy_set(str(test_file))
    assert [str(p) for p in error.value.problems] == [
        f"{test_file}: a policy test file (`authz test` runs it)"
    ]
