"""The one checkpoint every door calls: read the request view, decide, answer, observe.

A door (the gRPC `Check` in `authz.server`, the HTTP door in `authz.http_server`, any later one)
is an adapter: it says how to read its transport into a `Request` and how to write a `Verdict`
back. Everything else runs here, once: timing, the refusal of a request that cannot be read,
the guard that answers any unexpected exception with a deny (nothing on an error path ever
allows), the observers (metrics, decision log) and tracing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from authz.engine import Engine, new_decision_id
from authz.errors import AuthzError
from authz.identity import KeysPending, KeyWait
from authz.model import Request, Verdict

log = logging.getLogger("authz.checkpoint")

# Called after every check with the request (None when it could not be read), the verdict and
# the check's duration in seconds. Observers must not block: the decision log queues.
Observer = Callable[[Request | None, Verdict, float], None]

# An Observer that also takes the trace context the transport carried (the gRPC metadata; None
# for a door whose transport headers are the request's own headers, HTTP):
# `authz.observe.tracing.Tracing`.
Tracer = Callable[[Request | None, Verdict, float, Mapping[str, str] | None], None]

Answer = TypeVar("Answer")


def notify(
    observers: Sequence[Observer], request: Request | None, verdict: Verdict, seconds: float
) -> None:
    """Each observer, after a check of any door: an observer's fault must never change or
    delay an answer, so it is logged and the others still run."""
    for observe in observers:
        try:
            observe(request, verdict, seconds)
        except Exception:
            log.exception("observer failed")


def _as_is(verdict: Verdict) -> Verdict:
    return verdict


@dataclass(frozen=True, slots=True)
class Checkpoint:
    engine: Engine
    observers: Sequence[Observer] = ()
    tracer: Tracer | None = None

    def run(
        self,
        read: Callable[[], Request],
        answer: Callable[[Verdict], Answer],
        internal_error: Callable[[str], Answer],
        *,
        wait: KeyWait = KeyWait.BLOCK,
        expressible: Callable[[Verdict], Verdict] = _as_is,
        source: Callable[[], str | None] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> Answer:
        """One check, synchronous. `read` fills the request view from the transport (raising
        AuthzError for what cannot be judged); `expressible` turns an allow the door cannot
        carry out into a deny; `answer` writes the verdict back; `internal_error(decision_id)`
        is the deny for anything unexpected, built from constants. `source`: the client
        address for the decision log when the request could not be read. Raises only
        KeysPending (with `wait=KeyWait.DEFER`: the door awaits the refetch and runs again)."""
        started = time.perf_counter()
        try:
            request: Request | None
            try:
                request = read()
            except AuthzError as error:
                where = source() if source is not None else None
                request, verdict = None, self.engine.refuse(error, where)
            else:
                verdict = expressible(self.engine.check(request, wait=wait))
            response = answer(verdict)
        except KeysPending:
            raise  # not a failure: the door awaits the refetch and asks again
        except Exception:
            decision_id = new_decision_id()
            log.exception("check failed; denied (decision %s)", decision_id)
            return internal_error(decision_id)
        elapsed = time.perf_counter() - started
        # The tracer first: it dates the span back from now by `elapsed`, so the observers'
        # own time must not fall in between.
        if self.tracer is not None:
            try:
                self.tracer(request, verdict, elapsed, carrier)
            except Exception:
                log.exception("tracer failed")
        notify(self.observers, request, verdict, elapsed)
        return response
