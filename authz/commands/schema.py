"""`authz schema`: print the JSON Schema of a policy file (or a policy test file), for editors."""

from __future__ import annotations

import argparse

from authz.commands._output import add_output_argument, write_output

NAME = "schema"
HELP = "print the JSON Schema (draft 2020-12) of a policy file (or, with --tests, a test file)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_output_argument(parser)
    parser.add_argument(
        "--tests",
        action="store_true",
        help="the schema of a policy test file (*_test.yaml) instead",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: every `authz` command builds this parser, and the authoring modules cost
    # ~30 ms to import.
    from authz.authoring.cases_schema import cases_schema_text
    from authz.authoring.json_schema import schema_text

    text = cases_schema_text() if args.tests else schema_text()
    return write_output(args, text)
