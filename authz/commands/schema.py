"""`authz schema`: print the JSON Schema of a policy file (or a policy test file), for editors."""

from __future__ import annotations

import argparse
import sys

from authz.authoring.cases_schema import cases_schema_text
from authz.authoring.json_schema import schema_text

NAME = "schema"
HELP = "print the JSON Schema (draft 2020-12) of a policy file (or, with --tests, a test file)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", help="write to this file instead of standard output")
    parser.add_argument(
        "--tests",
        action="store_true",
        help="the schema of a policy test file (*_test.yaml) instead",
    )


def run(args: argparse.Namespace) -> int:
    text = cases_schema_text() if args.tests else schema_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
