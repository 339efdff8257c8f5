"""The `authz` command: one subcommand per module in `authz.commands`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from authz.commands import COMMANDS


def version() -> str:
    try:
        return metadata.version("authz")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="authz", description="External authorization for Envoy (ext_authz v3)."
    )
    parser.add_argument("--version", action="version", version=f"authz {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.configure(sub)
        runners[command.NAME] = command.run
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.argv = raw  # the supervisor of `serve --workers N` starts each worker with these
    try:
        code = runners[args.command](args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `authz explain ... | head`: the reader is gone, which is not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again (Python docs, signal).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
