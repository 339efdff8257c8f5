"""Shared helpers for the authoring tools' tests: real policy directories in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.files import write

__all__ = ["EXAMPLE_POLICIES", "REPO", "examples", "write"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_POLICIES = REPO / "policies"


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A private copy of the example policies (and their tests), safe to change."""
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, target)
    return target
