"""`authz usage --decision-log FILE... POLICY_DIR`: what logged traffic used of a policy set."""

from __future__ import annotations

import argparse
import sys

NAME = "usage"
HELP = "report from decision logs which rules, principals, paths and methods traffic used"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default="policies", help="policy directory (default: ./policies)"
    )
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
        "--cert-expiry-days",
        type=float,
        metavar="N",
        help="also list principals whose client certificate expires within N days",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from authz.audit.logs import LogReader, parse_time
    from authz.audit.usage import measure, report_text, to_json
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.observe.decision_log import rfc3339
    from authz.policy import load_policy_set

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as error:
        print(f"authz usage: {error}", file=sys.stderr)
        return 2
    try:
        policy_set = load_policy_set(args.directory)
    except PolicyError as error:
        return report_invalid(error, f"{args.directory}: invalid policy set")
    reader = LogReader(args.decision_log, since, until)
    try:
        usage = measure(policy_set, reader)
    except OSError as error:
        print(f"authz usage: {error}", file=sys.stderr)
        return 2
    expiring = None
    if args.cert_expiry_days is not None:
        expiring = usage.expiring(rfc3339(time.time() + args.cert_expiry_days * 86400))
    if args.json:
        doc = to_json(usage, expiring)
        doc.update(lines=reader.lines, bad_lines=reader.bad_lines, outside_time=reader.skipped)
        print(json.dumps(doc, indent=2))
    else:
        print(report_text(usage, expiring))
        if reader.bad_lines:
            print(f"{reader.bad_lines} of {reader.lines} lines were not records and were skipped")
    return 0
