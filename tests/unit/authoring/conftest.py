"""Shared helpers for the authoring tools' tests: real policy directories in tmp_path."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_POLICIES = REPO / "policies"


def write(directory: Path, name: str, text: str) -> Path:
    """Write a dedented file into `directory` and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A private copy of the example policies (and their tests), safe to change."""
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, target)
    return target
