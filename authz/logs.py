"""Log lines of the service: text or JSON, UTC timestamps ending in `Z`, the worker index.

    2026-11-30T02:07:31.123Z INFO authz [worker 1]: serving on ...
    {"time": "2026-11-30T02:07:31.123Z", "level": "INFO", "logger": "authz", "worker": 1, ...}

Third-party libraries log at WARNING and above unless the level is debug: watchfiles, for one,
logs every change it sees at INFO, which is noise next to our own reload line. granian sets its
own loggers to INFO (so the root's level does not hold them back) and warns that its embedded
server, which we chose, is experimental: both are dropped unless the level is debug.

Lines a client can cause (a `traceparent` over 512 bytes, a malformed `tracestate`, a request
that makes a check fail) would let any client write to the log at its own rate. The loggers that
write them are listed once (CLIENT_CAUSED) and share one filter, `RateLimitedLines`: one line
per kind of line (logger and message template) per interval, the next one saying how many were
left out; every line left out counts in `authz_log_lines_suppressed_total{logger}`. A kept line
is cut to MAX_MESSAGE characters with control characters escaped, since it quotes the client.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

# The loggers whose warnings and errors a client can cause, request by request.
CLIENT_CAUSED = (
    "opentelemetry.trace.propagation.tracecontext",  # traceparent over 512 bytes, malformed
    "opentelemetry.trace.span",  # tracestate: a bad member, a duplicate, over 32 members
    "authz.server",  # a gRPC check that failed (denied): a request may hit a bug each time
    "authz.http",  # the same on the HTTP door
    "authz.decision_log",  # a record that could not be formatted
    "authz.admin",  # an admin request (the decision page's, by path) that failed
)
INTERVAL_SECONDS = 60.0
MAX_MESSAGE = 300
MAX_KINDS = 256  # kinds of line remembered; more share one (a message built per request)


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
    for name in CLIENT_CAUSED:
        logger = logging.getLogger(name)
        if CLIENT_LINES not in logger.filters:
            logger.addFilter(CLIENT_LINES)


def _printable(message: str) -> str:
    """`message` cut to MAX_MESSAGE characters, control characters escaped (no forged lines)."""
    cut = message[:MAX_MESSAGE] + ("..." if len(message) > MAX_MESSAGE else "")
    if cut.isprintable():
        return cut
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


class RateLimitedLines(logging.Filter):
    """At most one WARNING-or-worse line per kind (logger, message template) per `interval`;
    lines of lower levels pass. `suppressed` counts the lines left out, by logger."""

    def __init__(
        self, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._quiet_until: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self.suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            if key not in self._quiet_until and len(self._quiet_until) >= MAX_KINDS:
                key = (record.name, "")
            if now < self._quiet_until.get(key, now):
                self._held[key] = self._held.get(key, 0) + 1
                self.suppressed[record.name] = self.suppressed.get(record.name, 0) + 1
                return False
            self._quiet_until[key] = now + self.interval
            held = self._held.pop(key, 0)
        message = _printable(record.getMessage())
        if held:
            message += f" ({held} more like this in the last {self.interval:g}s not logged)"
        record.msg, record.args = message, None
        return True

    def counts(self) -> dict[str, int]:
        """The lines left out so far, by logger."""
        with self._lock:
            return dict(self.suppressed)


# The one filter of the CLIENT_CAUSED loggers (installed by `configure`); the metric reads it.
CLIENT_LINES = RateLimitedLines()
