"""Unit tests for authz.identity."""

from __future__ import annotations

import sys
from pathlib import Path

# `pytest` (unlike `python -m pytest`) does not put the repository root on sys.path; the
# helpers live in `tests.support`, so add the root (as tests/e2e does).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
