"""Side-by-side timing: variants measured alternately, several rounds, medians and ratios.

Alternating A, B, A, B... within one process means a noisy neighbour (other engineers' tests
on a 2-core machine) slows every variant alike, so the *ratio* stays meaningful even when the
absolute numbers move.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    """Per-variant rounds (seconds per call) and their median."""

    name: str
    rounds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def per_second(self) -> float:
        return 1.0 / self.median if self.median > 0 else float("inf")


def alternate(
    variants: Mapping[str, Callable[[int], None]], *, calls: int, rounds: int
) -> dict[str, Result]:
    """Run each `variant(calls)` once per round, in rotating order; seconds per call.

    A variant does `calls` operations itself (so its loop overhead is its own, and the same for
    all variants); the order rotates each round so no variant always runs right after another.
    """
    names = list(variants)
    for name in names:  # warm-up: caches, lazy imports, the allocator
        variants[name](max(1, calls // 10))
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                gc.collect()
                gc.disable()
                started = time.perf_counter()
                variants[name](calls)
                samples[name].append((time.perf_counter() - started) / calls)
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {n: Result(n, tuple(s)) for n, s in samples.items()}
