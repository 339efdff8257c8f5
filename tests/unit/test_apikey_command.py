"""`authz apikey new`: a random key shown once, and the key-file line holding its hash."""

from __future__ import annotations

import pytest
import yaml

from authz.cli import main
from authz.identity.apikeys import key_hash
from authz.policy.language.keyfile import parse_key_file


def test_new_key_prints_the_key_once_and_a_line_with_its_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["apikey", "new", "--provider", "partners", "--id", "acme-1", "--label", "tier=gold"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[1].strip()
    line = out[3].strip()
    assert out.count(out[1]) == 1 and len(key) >= 43 and "," not in key
    entry = yaml.safe_load(line)[0]
    assert entry == {"id": "acme-1", "sha256": key_hash(key), "labels": {"tier": "gold"}}
    assert key not in line
    # The printed line is a valid key-file entry as it stands.
    table = parse_key_file("partners.keys.yaml", "keys:\n  " + line + "\n")
    assert not isinstance(table, list) and table[key_hash(key)].id == "acme-1"
    # A second key is different.
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[1].strip() != key


@pytest.mark.parametrize(
    "extra",
    [["--id", "bad id"], ["--id", "a", "--label", "tier"], ["--id", "a", "--label", "b c=d"]],
)
def test_bad_arguments_are_refused(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apikey", "new", "--provider", "partners", *extra]) == 2
    assert "authz apikey" in capsys.readouterr().err
