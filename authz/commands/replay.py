"""`authz replay --decision-log FILE... CANDIDATE_DIR`: what a candidate policy set would have
decided for logged traffic."""

from __future__ import annotations

import argparse
import sys

NAME = "replay"
HELP = "re-decide logged requests under a candidate policy set and report decisions that flip"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", help="the candidate policy directory")
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
    parser.add_argument(
        "--allow-flips",
        action="store_true",
        help="exit 0 even when a request that was allowed would be denied",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from authz.audit.logs import LogReader, parse_time
    from authz.audit.replay import ALLOW_TO_DENY, replay, report_text
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        print(f"authz replay: {error}", file=sys.stderr)
        return 2
    try:
        policy_set = load_policy_set(args.candidate)
    except PolicyError as error:
        return report_invalid(error, f"{args.candidate}: the candidate set is invalid")
    reader = LogReader(args.decision_log, since, until)
    try:
        report = replay(policy_set, reader)
    except OSError as error:
        print(f"authz replay: {error}", file=sys.stderr)
        return 2
    if args.json:
        doc = report.to_json()
        doc.update(lines=reader.lines, bad_lines=reader.bad_lines, outside_time=reader.skipped)
        print(json.dumps(doc, indent=2))
    else:
        print(report_text(report, reader.lines, reader.bad_lines))
    return 1 if report.count(ALLOW_TO_DENY) and not args.allow_flips else 0
