"""What the decision-log commands (`authz replay`, `authz usage`) share: their log arguments,
loading a policy set with a reader over the logs, and reading them.

Exit status 2 means the input cannot be used (a bad time, an invalid policy set, a log that
cannot be read to its end, logs with no decision record at all); `authz replay` keeps 1 for
"something allowed would be denied" alone, so a CI gate can tell the two apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported late at run time, so `authz --help` stays quick
    from authz.audit.logs import LogReader
    from authz.policy import PolicySet

EXIT_UNUSABLE = 2
Result = TypeVar("Result")


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decision-log",
        action="append",
        required=True,
        metavar="FILE",
        help="a decision log (plain or gzip); may be repeated, e.g. for rotated files",
    )
    parser.add_argument("--since", metavar="TIME", help="only records at or after TIME (ISO 8601)")
    parser.add_argument("--until", metavar="TIME", help="only records before TIME (ISO 8601)")
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def open_logs(
    command: str, args: argparse.Namespace, directory: str, invalid: str
) -> tuple[PolicySet, LogReader] | int:
    """The policy set in `directory` and a reader over `args.decision_log`, or EXIT_UNUSABLE
    after saying what is wrong (a bad time; the set is invalid, `invalid` says which)."""
    from authz.audit.logs import LogReader, parse_time
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        print(f"authz {command}: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        policy_set = load_policy_set(directory)
    except PolicyError as error:
        report_invalid(error, invalid)
        return EXIT_UNUSABLE
    return policy_set, LogReader(args.decision_log, since, until)


def read_logs(
    command: str, reader: LogReader, consume: Callable[[LogReader], Result]
) -> Result | int:
    """`consume(reader)`, then say on stderr which lines were skipped (the first few, by file
    and line); EXIT_UNUSABLE instead when a log cannot be read or holds no record at all."""
    from authz.audit.logs import UnreadableLog

    try:
        result = consume(reader)
    except UnreadableLog as error:
        print(f"authz {command}: cannot read {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    for bad in reader.bad_examples:
        print(f"authz {command}: skipped {bad}", file=sys.stderr)
    if reader.bad_lines:
        print(
            f"authz {command}: {reader.bad_lines} of {reader.lines} lines were not decision "
            "records and were skipped",
            file=sys.stderr,
        )
        if not reader.records:
            print(f"authz {command}: no decision record to read", file=sys.stderr)
            return EXIT_UNUSABLE
    return result


def reading_summary(reader: LogReader) -> dict[str, object]:
    """What the `--json` report says about the reading itself."""
    return {
        "lines": reader.lines,
        "bad_lines": reader.bad_lines,
        "bad_line_examples": [str(bad) for bad in reader.bad_examples],
        "outside_time": reader.skipped,
    }
