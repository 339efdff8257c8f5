"""Shared Hypothesis settings for the hostile tests.

Modest example counts, no per-example deadline (a shared, noisy CI machine must not turn a slow
example into a failure) and derandomized, so a CI run is deterministic and repeatable: 100
examples a property in the everyday run, the 300 they were first checked with under LONG_TESTS=1.
Set HOSTILE_EXAMPLES to run more locally, e.g. `HOSTILE_EXAMPLES=5000 pytest tests/hostile`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.support.scale import scaled

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", str(scaled(100, 300))))

HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
