"""`authz serve`: run the ext_authz gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from authz.config import Settings
from authz.errors import ConfigError, PolicyError

NAME = "serve"
HELP = "run the ext_authz gRPC service"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", default="policies", help="policy directory (default: ./policies)")
    parser.add_argument(
        "--listen",
        action="append",
        help="HOST:PORT or unix:/path; may be repeated (default: 127.0.0.1:9191)",
    )
    parser.add_argument("--ca-bundle", help="PEM CAs that issue workload certificates")
    parser.add_argument(
        "--trust-xfcc",
        action="store_true",
        help="read x-forwarded-client-cert (only behind a proxy that sets it)",
    )
    parser.add_argument(
        "--jwt-authn-metadata",
        nargs="?",
        const="envoy.filters.http.jwt_authn",
        help="accept claims verified by Envoy's jwt_authn filter from this metadata namespace",
    )
    parser.add_argument(
        "--no-watch",
        action="store_true",
        help="do not watch the policy directory (reload on SIGHUP only)",
    )
    parser.add_argument(
        "--poll-policies",
        action="store_true",
        help="watch the policy directory by polling (for file systems without change events)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        policies=args.policies,
        listen=(args.listen or ["127.0.0.1:9191"])[0],
        ca_bundle=args.ca_bundle,
        trust_xfcc=args.trust_xfcc,
        jwt_authn_metadata=args.jwt_authn_metadata,
    )


def run(args: argparse.Namespace) -> int:
    from authz.app import build_app, serve

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings_from(args)
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
        asyncio.run(
            serve(
                app,
                args.listen or [settings.listen],
                watch=not args.no_watch,
                poll_policies=args.poll_policies,
            )
        )
    except OSError as error:
        print(f"authz: {error}", file=sys.stderr)
        return 1
    return 0
