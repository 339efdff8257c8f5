"""Reading decision logs: many files, rotated or gzipped, one record at a time.

Memory stays bounded whatever the logs hold: a line is read at most MAX_LINE_BYTES at a time
(through gzip too), so a longer line is skipped without ever being held whole, and nothing is
kept but the counters of the caller. A line that is not a decision record (a torn last line
after a crash, a stray message on stdout, a field of the wrong type, JSON nested too deep) is
counted and skipped, never fatal; the first few are kept with their file and line number so
the command can say which. A file that cannot be read or decompressed is `UnreadableLog`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

from authz.audit.records import record_problem
from authz.observe.decision_log import rfc3339

_GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE_BYTES = 1024 * 1024  # far above any record the service writes
CHUNK_BYTES = 256 * 1024  # read at a time (split in C: much faster than a readline per line)
EXAMPLES = 5  # bad lines kept to show, with their file and line number


class UnreadableLog(Exception):
    """A log file that cannot be read to its end (missing, unreadable, corrupt gzip)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    file: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}"


def parse_time(text: str) -> str:
    """`--since`/`--until` (ISO 8601; a naive time is UTC) as the log spells time, so records
    compare as strings: `2026-01-02`, `2026-01-02T03:04:05Z`, `2026-01-02T03:04:05+02:00`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return rfc3339(moment.timestamp())


def record_timestamp(record: dict[str, Any]) -> float | None:
    """The record's `time` as Unix seconds, or None when it has none that parses."""
    text = record.get("time")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):  # not a time; a year 1 or 9999 with an offset
        return None


def _open(path: str) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip (by its magic, whatever its name)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    if gzipped:
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


class LogReader:
    """Iterate the records of `paths` in order, keeping those with since <= time < until."""

    def __init__(
        self, paths: Iterable[str], since: str | None = None, until: str | None = None
    ) -> None:
        self.paths = list(paths)
        self.since, self.until = since, until
        self.lines = 0  # lines read
        self.records = 0  # decision records among them
        self.bad_lines = 0  # not a decision record
        self.bad_examples: list[BadLine] = []  # the first EXAMPLES of them
        self.skipped = 0  # outside --since/--until

    def __iter__(self) -> Iterator[dict[str, Any]]:
        since, until = self.since, self.until
        for path in self.paths:
            for number, line in _lines(path):
                self.lines += 1
                record, why = _parse(line)
                if record is None:
                    self.bad_lines += 1
                    if len(self.bad_examples) < EXAMPLES:
                        self.bad_examples.append(BadLine(path, number, why))
                    continue
                self.records += 1
                if since is not None or until is not None:
                    when = record.get("time")
                    if not isinstance(when, str) or (
                        (since is not None and when < since)
                        or (until is not None and when >= until)
                    ):
                        self.skipped += 1
                        continue
                yield record


def _parse(line: bytes | None) -> tuple[dict[str, Any] | None, str]:
    """The record of a line (None for one over the bound), or None and why it is not one."""
    if line is None:
        return None, f"longer than {MAX_LINE_BYTES} bytes"
    try:
        text = line.decode()  # the service writes UTF-8; json.loads would guess UTF-16 too
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if not text.strip():
        return None, "an empty line"
    try:
        record = json.loads(text)
    except RecursionError:
        return None, "JSON nested too deep"
    except ValueError as error:
        return None, f"not JSON ({str(error)[:80]})"
    why = record_problem(record)
    if why is not None:
        return None, why
    return cast(dict[str, Any], record), ""


def _lines(path: str) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of a file; None for a line over MAX_LINE_BYTES, which is read
    through in bounded pieces and never held. Raises UnreadableLog."""
    number = 0
    try:
        with _open(path) as stream:
            rest, skipping = b"", False  # the unfinished last line; in a line over the bound
            while chunk := stream.read(CHUNK_BYTES):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    number += 1
                    yield number, None if skipping or len(line) > MAX_LINE_BYTES else line
                    skipping = False
                if len(rest) > MAX_LINE_BYTES:
                    rest, skipping = b"", True
            if rest or skipping:
                number += 1
                yield number, None if skipping else rest
    except (OSError, EOFError, zlib.error) as error:
        # OSError: missing, unreadable, not gzip after all; EOFError: a gzip cut short.
        where = f"{path}, after line {number}" if number else path
        why = (error.strerror if isinstance(error, OSError) else None) or str(error)
        raise UnreadableLog(f"{where}: {why}") from error
