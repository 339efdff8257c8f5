"""Rate limits: a stage after the decision (docs/policy.md, "Rate limits").

`stage.Limiter` applies a host's compiled limits to an allowed request with a `Counter`:
`counter.LocalCounter` (in the process, the default) or `shared.SharedCounter` (Redis: one
server, a cluster or Sentinel, as `stores` reads the `--rate-limit-store` URL).
"""

from __future__ import annotations

from authz.limits.counter import Count, Counter, LocalCounter
from authz.limits.keys import LimitKey, counter_key, parse_key
from authz.limits.stage import PERIODS, CompiledLimit, Limited, Limiter

__all__ = [
    "PERIODS",
    "CompiledLimit",
    "Count",
    "Counter",
    "LimitKey",
    "Limited",
    "Limiter",
    "LocalCounter",
    "counter_key",
    "parse_key",
]


def open_counter(url: str | None, *, max_keys: int) -> Counter:
    """The counter for `--rate-limit-store`: in the process for None, else Redis at `url`."""
    if url is None or url == "memory":
        return LocalCounter(max_keys)
    from authz.limits.shared import SharedCounter

    return SharedCounter(url, max_keys=max_keys)
