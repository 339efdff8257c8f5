"""The `authz` command: one subcommand per module in `authz.commands`."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from authz.commands import COMMANDS


def version() -> str:
    from importlib import metadata  # here, not at the top: ~25 ms at every start otherwise

    try:
        return metadata.version("authz")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class _Version(argparse.Action):
    """`--version`, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"authz {version()}")
        parser.exit()


def unrecognized(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """`unrecognized arguments: --polices pol (did you mean --policies?)`."""
    # argparse keeps every option string of a parser (its groups' too) in this table.
    flags = sorted(parser._option_string_actions)
    hints = []
    for word in unknown:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.partition("=")[0], flags, n=1)
            hints += [f"did you mean {close[0]}?"] if close else []
    return f"unrecognized arguments: {' '.join(unknown)}" + (
        f" ({'; '.join(hints)})" if hints else ""
    )


def misspelt(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The `--flags` in `argv` that are no flag of `parser`, nor the start of one (argparse
    takes a flag's unique prefix)."""
    flags = parser._option_string_actions
    words = list(argv)[: list(argv).index("--")] if "--" in argv else argv
    names = [word.partition("=")[0] for word in words if word.startswith("--")]
    return [name for name in names if not any(flag.startswith(name) for flag in flags)]


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that names a misspelt flag first: argparse would otherwise report
    only the required flag it hid (`authz check --pth /x`: "--path is required")."""

    argv: Sequence[str] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.argv, namespace)

    def error(self, message: str) -> NoReturn:
        unknown = misspelt(self.argv, self)
        if unknown and message.startswith("the following arguments are required"):
            message = unrecognized(unknown, self)
        super().error(message)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as `authz` reads it: exits 2 with the command's usage when it is wrong,
    without running anything (tests check the documented command lines with it)."""
    parser = argparse.ArgumentParser(
        prog="authz", description="External authorization for Envoy (ext_authz v3)."
    )
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    parsers = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.configure(sub)
        sub.set_defaults(run=command.run)
        parsers[command.NAME] = sub
    if argv and not argv[0].startswith("-") and argv[0] not in parsers:
        close = difflib.get_close_matches(argv[0], parsers, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        parser.error(f"unknown command {argv[0]!r}{hint} (authz --help lists them)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's usage and a close flag, not the top level's usage alone
        parsers[args.command].error(unrecognized(unknown, parsers[args.command]))
    args.argv = list(argv)  # the supervisor of `serve --workers N` starts each worker with these
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `authz explain ... | head`: the reader is gone, which is not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again (Python docs, signal).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
