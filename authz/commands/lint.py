"""`authz lint DIR [--strict]`: what an auditor would flag in a valid policy set."""

from __future__ import annotations

import argparse
import sys

NAME = "lint"
HELP = "flag risky or dead policy (open allows, shadowed rules, dry_run left in place, ...)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default="policies", help="policy directory (default: ./policies)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is any finding")
    parser.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="CODE",
        help="skip findings with this code; may be repeated",
    )
    parser.add_argument("--list-codes", action="store_true", help="list the finding codes and exit")


def run(args: argparse.Namespace) -> int:
    from authz.authoring.lint import CODES, INFORMATIONAL, lint
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    if args.list_codes:
        for code, meaning in CODES.items():
            print(f"{code:<22} {meaning}")
        return 0
    unknown = [c for c in args.disable if c not in CODES]
    if unknown:
        print(
            f"authz lint: unknown code(s): {', '.join(unknown)} (see --list-codes)", file=sys.stderr
        )
        return 2
    try:
        policy_set = load_policy_set(args.directory)
    except PolicyError as error:
        return report_invalid(error, f"{args.directory}: invalid, nothing linted")
    sources: dict[str, str] = {}
    for spec in policy_set.files:
        try:
            with open(spec.file, encoding="utf-8") as fh:
                sources[spec.file] = fh.read()
        except OSError:
            pass  # the finding then names line 1; the set itself loaded fine a moment ago
    findings = [f for f in lint(policy_set, sources) if f.code not in args.disable]
    for finding in findings:
        print(finding)
    count = len(findings)
    print(
        f"{count} finding{'s' if count != 1 else ''} in {len(policy_set.files)} files (revision "
        f"{policy_set.revision})"
    )
    # Informational findings (what the export cannot enforce) never fail --strict.
    return 1 if args.strict and any(f.code not in INFORMATIONAL for f in findings) else 0
