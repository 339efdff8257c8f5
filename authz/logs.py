"""Log lines of the service: text or JSON, UTC timestamps ending in `Z`, the worker index.

    2026-11-30T02:07:31.123Z INFO authz [worker 1]: serving on ...
    {"time": "2026-11-30T02:07:31.123Z", "level": "INFO", "logger": "authz", "worker": 1, ...}

Third-party libraries log at WARNING and above unless the level is debug: watchfiles, for one,
logs every change it sees at INFO, which is noise next to our own reload line. granian sets its
own loggers to INFO (so the root's level does not hold them back) and warns that its embedded
server, which we chose, is experimental: both are dropped unless the level is debug.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


def utc_timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-30T02:07:31.123Z`."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self, process: str | None) -> None:
        super().__init__()
        self._process = f" [{process}]" if process else ""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{utc_timestamp(record.created)} {record.levelname} {record.name}{self._process}: "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None, supervisor: bool) -> None:
        super().__init__()
        self._extra: dict[str, object] = {}
        if worker is not None:
            self._extra["worker"] = worker
        elif supervisor:
            self._extra["worker"] = "supervisor"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            **self._extra,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class QuietLibraries(logging.Filter):
    """Below debug: other libraries' records under WARNING, whatever level their loggers set
    themselves, and granian's notices that a part it runs is experimental."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "authz" or record.name.startswith("authz."):
            return True
        if record.levelno < logging.WARNING:
            return False
        return not (
            record.name.startswith("_granian") and record.getMessage().endswith("experimental!")
        )


def configure(
    level: str,
    fmt: str,
    *,
    worker: int | None = None,
    supervisor: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Route every log record to `stream` (stderr) in `fmt` ("text" or "json"). `worker`: this
    process's index under `--workers N`; `supervisor`: this process starts the workers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker, supervisor))
    else:
        process = f"worker {worker}" if worker is not None else "supervisor" if supervisor else None
        handler.setFormatter(TextFormatter(process))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    ours = logging.getLevelName(level.upper())
    if ours > logging.DEBUG:
        handler.addFilter(QuietLibraries())
    # Third-party loggers inherit the root's level: warnings and up, all of it with debug.
    root.setLevel(ours if ours <= logging.DEBUG else max(ours, logging.WARNING))
    logging.getLogger("authz").setLevel(ours)
