"""Flags several commands share, declared once: the policy directory, and the request that
`check` sends and `explain` describes (its request line and headers), with their reader."""

from __future__ import annotations

import argparse


def add_policy_directory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default="policies", help="policy directory (default: ./policies)"
    )


def add_request_line(parser: argparse.ArgumentParser) -> None:
    """--method, --path and --host of the request."""
    parser.add_argument("--method", "-X", default="GET", help="HTTP method (default: GET)")
    parser.add_argument("--path", required=True, help="the request path as sent (:path)")
    parser.add_argument("--host", default="localhost", help=":authority (default: localhost)")


def add_header_flag(parser: argparse.ArgumentParser) -> None:
    """--header NAME=VALUE, read by `header_flags`."""
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a request header; may be repeated",
    )


def header_flags(pairs: list[str]) -> dict[str, str]:
    """The --header flags as headers by lower-cased name. Raises ValueError for a flag that is
    not NAME=VALUE."""
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--header {pair!r}: write NAME=VALUE")
        headers[name.strip().lower()] = value
    return headers
