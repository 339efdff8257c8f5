"""Log lines at the default level: ours, and other libraries' warnings only (issue 25.7)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from authz import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("authz").level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("authz").setLevel(saved[2])


def _emit(level: str) -> str:
    stream = io.StringIO()
    logs.configure(level, "text", stream=stream)
    granian = logging.getLogger("_granian")
    granian.setLevel(logging.INFO)  # as granian's own dictConfig does, whatever ours says
    granian.info("Starting granian (embedded)")
    logging.getLogger("_granian.serve").info("Started worker-1")
    granian.warning("Embedded server is experimental!")
    granian.error("worker died")
    logging.getLogger("authz.http").info("HTTP authorization listening")
    logging.getLogger("watchfiles").warning("a real warning")
    return stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_default_level_keeps_ours_and_other_libraries_warnings() -> None:
    text = _emit("info")
    assert "HTTP authorization listening" in text
    assert "a real warning" in text and "worker died" in text
    assert "Starting granian" not in text and "Started worker-1" not in text
    assert "experimental" not in text


@pytest.mark.usefixtures("restore_logging")
def test_debug_shows_everything() -> None:
    text = _emit("debug")
    assert "Starting granian" in text and "Started worker-1" in text
    assert "experimental" in text
