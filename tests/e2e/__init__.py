"""End-to-end tests: a real Envoy in front of an ext_authz server and an echo upstream."""

from __future__ import annotations

import sys
from pathlib import Path

# `pytest` (unlike `python -m pytest`) does not put the repository root on sys.path, and tests/
# is not a package, so `tests.support` would only import under one of the two launchers. Adding
# the root here makes both work; a `pythonpath = ["."]` in pytest's config would do the same.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
