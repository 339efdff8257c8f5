"""`authz lint`: being written."""

from __future__ import annotations

import argparse

NAME = "lint"
HELP = "(not ready yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory")


def run(args: argparse.Namespace) -> int:
    return 2
