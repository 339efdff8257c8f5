"""Reading decision logs: many files, rotated or gzipped, one record at a time.

Memory stays bounded whatever the size of the logs: files are read line by line and nothing is
kept but the counters of the caller. A line that is not a JSON object (a torn last line after a
crash, a stray message on stdout) is counted and skipped, never fatal.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, cast

from authz.observe.decision_log import rfc3339

_GZIP_MAGIC = b"\x1f\x8b"


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
    except ValueError:
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
        self.bad_lines = 0  # not a JSON object
        self.skipped = 0  # outside --since/--until

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loads = json.loads
        since, until = self.since, self.until
        for path in self.paths:
            with _open(path) as stream:
                for line in stream:
                    self.lines += 1
                    try:
                        record = loads(line)
                    except ValueError:
                        self.bad_lines += 1
                        continue
                    if not isinstance(record, dict):
                        self.bad_lines += 1
                        continue
                    if since is not None or until is not None:
                        when = record.get("time")
                        if not isinstance(when, str) or (
                            (since is not None and when < since)
                            or (until is not None and when >= until)
                        ):
                            self.skipped += 1
                            continue
                    yield record
