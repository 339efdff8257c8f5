"""`authz explain`: being written."""

from __future__ import annotations

import argparse

NAME = "explain"
HELP = "(not ready yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory")


def run(args: argparse.Namespace) -> int:
    return 2
