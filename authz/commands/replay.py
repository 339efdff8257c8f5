"""`authz replay --decision-log FILE... CANDIDATE_DIR`: what a candidate policy set would have
decided for logged traffic."""

from __future__ import annotations

import argparse

from authz.commands._logs import add_log_arguments, open_logs, read_logs, reading_summary

NAME = "replay"
HELP = "re-decide logged requests under a candidate policy set and report decisions that flip"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", help="the candidate policy directory")
    add_log_arguments(parser)
    parser.add_argument(
        "--allow-flips",
        action="store_true",
        help="exit 0 even when a request that was allowed would be denied",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from authz.audit.replay import ALLOW_TO_DENY, replay, report_text

    opened = open_logs(
        NAME, args, args.candidate, f"{args.candidate}: the candidate set is invalid"
    )
    if isinstance(opened, int):
        return opened
    policy_set, reader = opened
    report = read_logs(NAME, reader, lambda records: replay(policy_set, records))
    if isinstance(report, int):
        return report
    if args.json:
        doc = report.to_json()
        doc.update(reading_summary(reader))
        print(json.dumps(doc, indent=2))
    else:
        print(report_text(report, reader.lines, reader.bad_lines))
    return 1 if report.count(ALLOW_TO_DENY) and not args.allow_flips else 0
