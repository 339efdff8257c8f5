"""How long the slow properties and soaks run.

The default run keeps each of them to a size that still proves its bound (a cache many times
over its limit, a soak with every fault kind); `LONG_TESTS=1 ./dev test ...` runs the long
forms the issues were first checked with.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

LONG = os.environ.get("LONG_TESTS", "") not in ("", "0")


def scaled(default: T, long: T) -> T:
    """`default` in the everyday run, `long` when LONG_TESTS is set (a size, a tuple of seeds)."""
    return long if LONG else default
