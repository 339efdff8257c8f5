"""What the decision-log commands (`authz replay`, `authz usage`) share: their log arguments,
and loading a policy set with a reader over the logs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported late at run time, so `authz --help` stays quick
    from authz.audit.logs import LogReader
    from authz.policy import PolicySet


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
    """The policy set in `directory` and a reader over `args.decision_log`, or the exit code
    after saying what is wrong (2: a bad time; 1: the set is invalid, `invalid` says which)."""
    from authz.audit.logs import LogReader, parse_time
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        print(f"authz {command}: {error}", file=sys.stderr)
        return 2
    try:
        policy_set = load_policy_set(directory)
    except PolicyError as error:
        return report_invalid(error, invalid)
    return policy_set, LogReader(args.decision_log, since, until)
