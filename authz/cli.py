"""The `authz` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from authz.config import Settings
from authz.errors import ConfigError, PolicyError


def _serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the ext_authz gRPC service")
    serve.add_argument("--policies", default="policies", help="policy directory (default: ./policies)")
    serve.add_argument(
        "--listen",
        action="append",
        help="HOST:PORT or unix:/path; may be repeated (default: 127.0.0.1:9191)",
    )
    serve.add_argument("--ca-bundle", help="PEM CAs that issue workload certificates")
    serve.add_argument(
        "--trust-xfcc",
        action="store_true",
        help="read x-forwarded-client-cert (only behind a proxy that sets it)",
    )
    serve.add_argument(
        "--jwt-authn-metadata",
        nargs="?",
        const="envoy.filters.http.jwt_authn",
        help="accept claims verified by Envoy's jwt_authn filter from this metadata namespace",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        policies=args.policies,
        listen=(args.listen or ["127.0.0.1:9191"])[0],
        ca_bundle=args.ca_bundle,
        trust_xfcc=args.trust_xfcc,
        jwt_authn_metadata=args.jwt_authn_metadata,
    )


def _run_serve(args: argparse.Namespace) -> int:
    from authz.app import build_app, serve

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = _settings_from(args)
    try:
        app = build_app(settings)
    except PolicyError as error:
        print(f"authz: the policies in {settings.policies} cannot be used:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"authz: {error}", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(app, args.listen or [settings.listen]))
    except OSError as error:
        print(f"authz: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
