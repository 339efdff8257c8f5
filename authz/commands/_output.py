"""Where the commands that print a document (`envoy-config`, `export`, `schema`) put it."""

from __future__ import annotations

import argparse
import sys


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")


def write_output(args: argparse.Namespace, text: str) -> int:
    """`text` to `--output`, else to standard output; the exit code, 0."""
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
