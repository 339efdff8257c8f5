"""Where the commands that print a document (`envoy-config`, `export`, `schema`) put it."""

from __future__ import annotations

import argparse
import sys


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")


def write_output(args: argparse.Namespace, text: str) -> int:
    """`text` to `--output`, else to standard output; the exit code: 0, or 2 after one line
    saying why `--output` cannot be written (a directory, no permission, a missing parent)."""
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        why = error.strerror or str(error)
        who = " ".join(["authz", *filter(None, [getattr(args, "command", None)])])
        print(f"{who}: cannot write {args.output}: {why}", file=sys.stderr)
        return 2
    return 0
