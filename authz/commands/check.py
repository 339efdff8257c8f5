"""`authz check --path P ...`: send one real Check to a running service and print its answer.

The request goes over gRPC as Envoy's ext_authz filter sends it, so the answer is the running
service's (its policies, its keys, its rate limits); `authz explain` shows why, rule by rule,
from the policy files alone.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from authz.commands._flags import add_header_flag, add_request_line, header_flags

NAME = "check"
HELP = (
    "send one Check to a running `authz serve`, as Envoy would, and print the decision "
    "(exit 0 allowed, 3 denied, 1 no answer)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authz",
        default="127.0.0.1:9191",
        metavar="ADDR",
        help="the service's gRPC address, HOST:PORT or unix:/path (default: 127.0.0.1:9191)",
    )
    add_request_line(parser)
    parser.add_argument(
        "--principal",
        default="",
        help="the mTLS peer principal Envoy verified, e.g. "
        "spiffe://cluster.local/ns/shop/sa/frontend",
    )
    parser.add_argument("--token", help="a JWT, sent as `authorization: Bearer TOKEN`")
    add_header_flag(parser)
    parser.add_argument("--source-ip", default="127.0.0.1", help="the client address")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")


def run(args: argparse.Namespace) -> int:
    import grpc

    from authz import addresses
    from authz.wire.client import Probe, render_answer, send_check

    try:
        addresses.parse(args.authz)
        headers = header_flags(args.header)
    except ValueError as error:
        print(f"authz check: {error}", file=sys.stderr)
        return 2
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    probe = Probe(args.method, args.path, args.host, headers, args.principal, args.source_ip)
    try:
        answer = send_check(addresses.reachable(args.authz), probe, args.timeout)
    except grpc.RpcError as error:
        detail = error.details() if isinstance(error, grpc.Call) else str(error)
        print(
            f"authz check: no answer from {args.authz}: {detail} (is `authz serve` running?)",
            file=sys.stderr,
        )
        return 1
    print(render_answer(answer))
    print(f"why, rule by rule: {explain_line(args)}")
    return 0 if answer.allowed else 3


def explain_line(args: argparse.Namespace) -> str:
    """The `authz explain` command for the same request (from the files in ./policies)."""
    words = ["authz", "explain", "policies", "--method", args.method, "--path", args.path]
    words += ["--host", args.host]
    if args.principal:
        words += ["--principal", args.principal]
    for header in args.header:
        words += ["--header", header]
    quoted = " ".join(shlex.quote(w) for w in words)
    # explain reads verified claims, not a token: the reader fills them in.
    return quoted + " --claims CLAIMS_JSON" if args.token else quoted
