"""The `authz` command: one subcommand per module in `authz.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from authz.commands import COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="authz", description="External authorization for Envoy (ext_authz v3)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.configure(sub)
        runners[command.NAME] = command.run
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.argv = raw  # the supervisor of `serve --workers N` starts each worker with these
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
