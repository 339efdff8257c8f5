"""Key files (*.keys.yaml): parsing with FILE:LINE, and how the loader treats them."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.errors import PolicyError
from authz.identity.apikeys import key_hash
from authz.policy import load_policy_set
from authz.policy.language.keyfile import parse_key_file
from authz.policy.load.loader import is_policy_file

H1, H2 = key_hash("one"), key_hash("two")


def test_a_key_file() -> None:
    table = parse_key_file(
        "p.keys.yaml",
        f"keys:\n  - {{id: acme-1, sha256: {H1.upper()}, labels: {{tier: gold}}}}\n"
        f"  - {{id: beta, sha256: {H2}}}\n",
    )
    assert not isinstance(table, list)
    assert table[H1].id == "acme-1" and table[H1].labels == {"tier": "gold"}
    assert table[H2].labels == {}


def test_an_empty_key_file_holds_no_keys() -> None:
    assert parse_key_file("p.keys.yaml", "keys: []\n") == {}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (f"keys:\n  - {{id: a, sha256: {H1}}}\n  - {{id: a, sha256: {H2}}}\n", 3, "also used"),
        (f"keys:\n  - {{id: a, sha256: {H1}}}\n  - {{id: b, sha256: {H1}}}\n", 3, "also the hash"),
        ("keys:\n  - {id: a, sha256: abc}\n", 2, "64 hex"),
        ("keys:\n  - {id: a, sha256: the-key-itself}\n", 2, "never the key"),
        (f"keys:\n  - {{sha256: {H1}}}\n", 2, "`id` is required"),
        (f"keys:\n  - {{id: 'a b', sha256: {H1}}}\n", 2, "`id`"),
        (f"keys:\n  - id: a\n    sha256: {H1}\n    labels: {{tier: 1}}\n", 4, "string value"),
        (f"keys:\n  - {{id: a, sha256: {H1}, key: secret}}\n", 2, "unknown field 'key'"),
        ("secrets: []\n", 1, "unknown field 'secrets'"),
        ("keys: {a: b}\n", 1, "list"),
    ],
)
def test_problems_name_the_line(text: str, line: int, fragment: str) -> None:
    problems = parse_key_file("p.keys.yaml", text)
    assert isinstance(problems, list) and problems
    assert any(p.line == line and fragment in p.message for p in problems), problems


def test_key_files_are_never_policies() -> None:
    assert not is_policy_file("partners.keys.yaml")
    assert not is_policy_file("partners.keys.yml")
    assert is_policy_file("partners.yaml")


POLICY = "rules:\n  - {name: open, action: allow}\n"


def test_a_bad_key_file_rejects_the_set(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "partners.keys.yaml").write_text("keys:\n  - {id: a, sha256: nope}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_set(str(tmp_path))
    assert "partners.keys.yaml:2:" in str(caught.value)


def test_a_key_file_changes_the_revision(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    keys = tmp_path / "partners.keys.yaml"
    keys.write_text(f"keys:\n  - {{id: a, sha256: {H1}}}\n")
    first = load_policy_set(str(tmp_path)).revision
    keys.write_text(f"keys:\n  - {{id: a, sha256: {H2}}}\n")
    assert load_policy_set(str(tmp_path)).revision != first


def test_a_directory_of_key_files_only_has_no_policy(tmp_path: Path) -> None:
    (tmp_path / "partners.keys.yaml").write_text("keys: []\n")
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy_set(str(tmp_path))
