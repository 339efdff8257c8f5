"""`authz validate [DIR | FILE]`: does the policy set compile? Exit 0 if so, 1 with every problem
if not. A single file is validated as a set of one (a role it uses from another file is then
undefined)."""

from __future__ import annotations

import argparse

NAME = "validate"
HELP = (
    "check that a policy directory (or file) loads and compiles; print every problem as FILE:LINE"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        nargs="?",
        default="policies",
        metavar="PATH",
        help="policy directory, or one policy file (default: ./policies)",
    )


def run(args: argparse.Namespace) -> int:
    from authz.commands._problems import counted, report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set
    from authz.reload import rules_text

    try:
        policy_set = load_policy_set(args.directory)
    except PolicyError as error:
        return report_invalid(
            error, f"{args.directory}: invalid, {counted(len(error.problems), 'problem')}"
        )
    limits = sum(len(f.rate_limits) for f in policy_set.files)
    limits_text = f", {counted(limits, 'rate limit')}" if limits else ""
    print(
        f"{args.directory}: {counted(len(policy_set.files), 'file')}, "
        f"{rules_text(policy_set.rule_count)}{limits_text}, revision {policy_set.revision}"
    )
    return 0
