"""The rate-limit stage: after the rules allowed a request, count it under every limit that
matches, and turn the decision into a 429 when one of them is over.

Pure but for the `Counter` (which may be Redis-backed, but never blocks more than a few
milliseconds and never raises). The engine calls it only for allowed requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from authz.limits.counter import Count, Counter
from authz.limits.keys import LimitKey, counter_key
from authz.model import Decision, ShadowMatch

if TYPE_CHECKING:  # authz.policy reads these modules: no import cycle at run time
    from authz.policy.decide.context import RequestContext
    from authz.policy.decide.rules import Reads

TOO_MANY_REQUESTS = 429
PERIODS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600}
# The action a dry-run limit shows in `Decision.shadow` ("name:would_limit" in the metadata).
LIMIT_ACTION = "limit"
KEY_CACHE_SIZE = 16_384


class Matcher(Protocol):
    """A limit's from/to/when, compiled as a rule's are
    (`authz.policy.decide.rules.CompiledRule`)."""

    @property
    def reads(self) -> Reads: ...

    def matches(self, ctx: RequestContext) -> bool: ...

    def mismatch(self, ctx: RequestContext) -> str | None: ...


@dataclass(frozen=True, slots=True, eq=False)
class CompiledLimit:
    """One `rate_limits` entry, ready to apply. `per` is in seconds."""

    name: str
    file: str
    line: int
    matcher: Matcher
    key: LimitKey
    limit: int
    per: int
    dry_run: bool = False

    @property
    def reads(self) -> Reads:
        """What the limit reads of a request besides method, path, host and identity: its
        matcher's reads and its key's (for the decision cache's key)."""
        from authz.policy.decide.rules import Reads

        own = Reads()
        if self.key.kind == "header":
            own = Reads(headers=frozenset({self.key.name}))
        elif self.key.kind == "source_ip":
            own = Reads(source_ip=True)
        elif self.key.kind == "context":
            own = Reads(context=True)
        elif self.key.kind not in ("principal", "request_principal", "claim", "api_key"):
            own = Reads(opaque=True)  # a kind the cache key cannot name: never cached
        return self.matcher.reads | own

    @property
    def per_name(self) -> str:
        return next(name for name, seconds in PERIODS.items() if seconds == self.per)


# The limits that count one request, each with its counter key.
Plan = tuple[tuple[CompiledLimit, bytes], ...]


@dataclass(frozen=True, slots=True)
class Limited:
    """The stage's answer: the decision (a 429, or the one it was given with any "would
    limit" dry runs added) and the headers for the client."""

    decision: Decision
    headers: tuple[tuple[str, str], ...] = ()


class Limiter:
    """Applies compiled limits with one `Counter` (thread-safe when the counter is)."""

    def __init__(self, counter: Counter, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter
        self._clock = clock
        # (limit name, key value) -> counter key: hashing costs more than the rest of a count.
        # Bounded: emptied when full (a miss only costs the hash again). The raw values stay
        # in this process's memory, as the verified-token cache's do; no store ever sees one.
        self._keys: dict[tuple[str, str], bytes] = {}

    def apply(
        self, limits: Sequence[CompiledLimit], ctx: RequestContext, decision: Decision
    ) -> Limited | None:
        """None when no limit counted the request, or all counted it and none is over."""
        return self.count(self.plan(limits, ctx), decision)

    def plan(self, limits: Sequence[CompiledLimit], ctx: RequestContext) -> Plan:
        """The limits that count this request, each with its counter key (what the decision
        cache keeps with an allow, so a repeated request is only counted)."""
        planned: list[tuple[CompiledLimit, bytes]] = []
        for limit in limits:
            if not limit.matcher.matches(ctx):
                continue
            # No key: not counted (lint warns about such limits). Several (a header sent
            # twice): counted under each, as a limit holds under any reading.
            for value in limit.key.readings(ctx):
                pair = (limit.name, value)
                key = self._keys.get(pair)
                if key is None:
                    if len(self._keys) >= KEY_CACHE_SIZE:
                        self._keys.clear()
                    key = self._keys[pair] = counter_key(limit.name, value)
                planned.append((limit, key))
        return tuple(planned)

    def count(self, plan: Plan, decision: Decision) -> Limited | None:
        """Count the request under every planned limit; the 429 when one is over."""
        if not plan:
            return None
        now = self._clock()
        over: tuple[CompiledLimit, Count] | None = None
        would: list[ShadowMatch] = []
        for limit, key in plan:
            count = self.counter.take(key, limit.limit, limit.per, now)
            if count.allowed:
                continue
            if limit.dry_run:
                would.append(ShadowMatch(limit.name, LIMIT_ACTION, True))
            elif over is None:
                over = (limit, count)
        if over is not None:
            limit, count = over
            shadow = decision.shadow + tuple(would)
            denied = Decision(False, TOO_MANY_REQUESTS, limit.name, shadow=shadow)
            return Limited(denied, headers(limit, count))
        if would:
            return Limited(replace(decision, shadow=decision.shadow + tuple(would)))
        return None


def headers(limit: CompiledLimit, count: Count) -> tuple[tuple[str, str], ...]:
    """`Retry-After` (RFC 9110 section 10.2.3: whole seconds) and the IETF httpapi draft's
    `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured
    fields: q = quota, w = window seconds, r = remaining, t = seconds until reset)."""
    reset = max(1, math.ceil(count.reset))
    name = limit.name.replace("\\", "\\\\").replace('"', '\\"')
    return (
        ("retry-after", str(reset)),
        ("ratelimit-policy", f'"{name}";q={limit.limit};w={limit.per}'),
        ("ratelimit", f'"{name}";r={count.remaining};t={reset}'),
    )
