"""Shared Hypothesis settings for the hostile tests.

Modest example counts, no per-example deadline (a shared, noisy CI machine must not turn a slow
example into a failure) and derandomized, so a CI run is deterministic and repeatable. Set
HOSTILE_EXAMPLES to run more examples locally, e.g. `HOSTILE_EXAMPLES=5000 pytest tests/hostile`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "300"))

HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
