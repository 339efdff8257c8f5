"""Issue 23.4: lines a client can cause are one per kind per interval, counted when left out."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from authz import logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guarded() -> Iterator[tuple[logging.Logger, logs.RateLimitedLines, Clock, io.StringIO]]:
    clock = Clock()
    limiter = logs.RateLimitedLines(interval=60.0, clock=clock)
    logger = logging.getLogger("authz.test_log_flood")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    logger.addFilter(limiter)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, limiter, clock, out
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(limiter)


def test_one_line_per_kind_per_interval_then_the_count(
    guarded: tuple[logging.Logger, logs.RateLimitedLines, Clock, io.StringIO],
) -> None:
    logger, limiter, clock, out = guarded
    for i in range(100):
        logger.warning("oversized header from %s", f"client-{i}")
        logger.warning("another kind %d", i)
        logger.info("info lines are not limited %d", i)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "oversized header from client-0",
        "another kind 0",
        "info lines are not limited 0",
    ]
    assert len(lines) == 102
    assert limiter.counts() == {"authz.test_log_flood": 198}
    clock.now += 59.9
    logger.warning("oversized header from %s", "late")
    assert len(out.getvalue().splitlines()) == 102
    clock.now += 0.2
    logger.warning("oversized header from %s", "next")
    assert out.getvalue().splitlines()[-1] == (
        "oversized header from next (100 more like this in the last 60s not logged)"
    )


def test_a_kept_line_is_cut_and_cannot_forge_lines(
    guarded: tuple[logging.Logger, logs.RateLimitedLines, Clock, io.StringIO],
) -> None:
    logger, _, _, out = guarded
    logger.warning("member %s", "x\nFAKE 2026 ERROR forged line\r" + "y" * 5000)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("member x\\nFAKE 2026 ERROR forged line\\r")
    assert len(line) <= logs.MAX_MESSAGE + 20 and line.endswith("...")


def test_messages_built_per_request_share_one_kind_past_the_bound(
    guarded: tuple[logging.Logger, logs.RateLimitedLines, Clock, io.StringIO],
) -> None:
    logger, limiter, _, out = guarded
    for i in range(logs.MAX_KINDS + 500):
        logger.warning(f"formatted by the caller {i}")  # the case under test
    assert len(out.getvalue().splitlines()) == logs.MAX_KINDS + 1
    assert len(limiter._quiet_until) == logs.MAX_KINDS + 1


def test_configure_guards_every_client_caused_logger() -> None:
    root, ours = logging.getLogger(), logging.getLogger("authz")
    saved = (root.handlers[:], root.level, ours.level)
    try:
        logs.configure("info", "text", stream=io.StringIO())
        logs.configure("info", "text", stream=io.StringIO())  # twice: still one filter
        for name in logs.CLIENT_CAUSED:
            assert logging.getLogger(name).filters.count(logs.CLIENT_LINES) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])
