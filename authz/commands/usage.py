"""`authz usage --decision-log FILE... POLICY_DIR`: what logged traffic used of a policy set."""

from __future__ import annotations

import argparse
import sys

from authz.commands._logs import add_log_arguments, open_logs

NAME = "usage"
HELP = "report from decision logs which rules, principals, paths and methods traffic used"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default="policies", help="policy directory (default: ./policies)"
    )
    add_log_arguments(parser)
    parser.add_argument(
        "--cert-expiry-days",
        type=float,
        metavar="N",
        help="also list principals whose client certificate expires within N days",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from authz.audit.usage import measure, report_text, to_json
    from authz.observe.decision_log import rfc3339

    opened = open_logs(NAME, args, args.directory, f"{args.directory}: invalid policy set")
    if isinstance(opened, int):
        return opened
    policy_set, reader = opened
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
