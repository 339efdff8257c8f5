"""`authz usage --decision-log FILE... POLICY_DIR`: what logged traffic used of a policy set."""

from __future__ import annotations

import argparse

from authz.commands._flags import add_policy_directory
from authz.commands._logs import add_log_arguments, open_logs, read_logs, reading_summary

NAME = "usage"
HELP = "report from decision logs which rules, principals, paths and methods traffic used"


def configure(parser: argparse.ArgumentParser) -> None:
    add_policy_directory(parser)
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
    usage = read_logs(NAME, reader, lambda records: measure(policy_set, records))
    if isinstance(usage, int):
        return usage
    expiring = None
    if args.cert_expiry_days is not None:
        expiring = usage.expiring(rfc3339(time.time() + args.cert_expiry_days * 86400))
    if args.json:
        doc = to_json(usage, expiring)
        doc.update(reading_summary(reader))
        print(json.dumps(doc, indent=2))
    else:
        print(report_text(usage, expiring))
    return 0
