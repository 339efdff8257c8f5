"""`authz lint DIR [--strict]`: what an auditor would flag in a valid policy set."""

from __future__ import annotations

import argparse
import sys

from authz.commands._flags import add_policy_directory

NAME = "lint"
HELP = "flag risky or dead policy (open allows, shadowed rules, dry_run left in place, ...)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_policy_directory(parser)
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is any finding")
    parser.add_argument(
        "--exportable",
        action="store_true",
        help="also flag what Envoy's own filters cannot enforce (`not-exportable`, as `authz "
        "export envoy` would refuse it)",
    )
    parser.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="CODE",
        help="skip findings with this code; may be repeated",
    )
    parser.add_argument("--list-codes", action="store_true", help="list the finding codes and exit")


def run(args: argparse.Namespace) -> int:
    from authz.authoring.lint import CODES, lint
    from authz.commands._problems import counted, report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    if args.list_codes:
        width = max(map(len, CODES))
        for code, meaning in CODES.items():
            print(f"{code:<{width}}  {meaning}")
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
    found = lint(policy_set, sources, exportable=args.exportable)
    findings = [f for f in found if f.code not in args.disable]
    for finding in findings:
        print(finding)
    print(
        f"{counted(len(findings), 'finding')} in {counted(len(policy_set.files), 'file')} "
        f"(revision {policy_set.revision})"
    )
    return 1 if args.strict and findings else 0
