"""`authz serve`: run the ext_authz gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

from authz.config import Settings
from authz.errors import ConfigError, PolicyError
from authz.workers import Supervisor, address_for_worker, addresses_for_worker, worker_index

NAME = "serve"
HELP = "run the ext_authz gRPC service"


def configure(parser: argparse.ArgumentParser) -> None:
    # Flags default to None ("not given") so the config file and AUTHZ_* variables can fill
    # them: flags > environment > config file > defaults (see authz.config_file).
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (default: $AUTHZ_CONFIG, else none)"
    )
    parser.add_argument("--policies", help="policy directory (default: ./policies)")
    parser.add_argument(
        "--listen",
        action="append",
        help="HOST:PORT or unix:/path; may be repeated (default: 127.0.0.1:9191)",
    )
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here (default: off)",
    )
    parser.add_argument(
        "--decision-log",
        metavar="PATH",
        help="write one JSON line per check to PATH ('-' for stdout; default: off)",
    )
    parser.add_argument(
        "--log-header",
        action="append",
        metavar="NAME",
        help="show this request header in the decision log; may be repeated "
        "(credentials and token headers are never shown)",
    )
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: 1)")
    parser.add_argument("--ca-bundle", help="PEM CAs that issue workload certificates")
    parser.add_argument(
        "--trust-xfcc",
        action="store_true",
        default=None,
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
        default=None,
        help="do not watch the policy directory (reload on SIGHUP only)",
    )
    parser.add_argument(
        "--poll-policies",
        action="store_true",
        default=None,
        help="watch the policy directory by polling (for file systems without change events)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags, the environment and the config file. Raises ConfigError."""
    from authz.config_file import load_settings

    def given(name: str) -> object:
        return getattr(args, name, None)

    flags: dict[str, tuple[str, object]] = {
        "policies": ("--policies", given("policies")),
        "listen": ("--listen", given("listen")),
        "admin": ("--admin", given("admin")),
        "decision_log": ("--decision-log", given("decision_log")),
        "log_headers": ("--log-header", given("log_header")),
        "workers": ("--workers", given("workers")),
        "ca_bundle": ("--ca-bundle", given("ca_bundle")),
        "trust_xfcc": ("--trust-xfcc", given("trust_xfcc")),
        "jwt_authn_metadata": ("--jwt-authn-metadata", given("jwt_authn_metadata")),
        "watch": ("--no-watch", None if given("no_watch") is None else not given("no_watch")),
        "poll_policies": ("--poll-policies", given("poll_policies")),
        "log_level": ("--log-level", given("log_level")),
    }
    config: str | None = given("config")  # type: ignore[assignment]
    return load_settings(config, environ=os.environ, flags=flags)


def run(args: argparse.Namespace) -> int:
    from authz.app import build_app, serve

    try:
        settings = settings_from(args)
    except ConfigError as error:
        print(f"authz: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    index = worker_index()
    if index is None and settings.workers > 1:
        return Supervisor(settings.workers, getattr(args, "argv", sys.argv[1:])).run()
    if index is not None:
        settings = _for_worker(settings, index)
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
                list(settings.listen_all),
                watch=settings.watch,
                poll_policies=settings.poll_policies,
            )
        )
    except OSError as error:
        print(f"authz: {error}", file=sys.stderr)
        return 1
    return 0


def _for_worker(settings: Settings, index: int) -> Settings:
    """Worker `index` of `--workers N` listens on its own addresses (see authz.workers)."""
    listen_all = addresses_for_worker(settings.listen_all, index)
    admin = address_for_worker(settings.admin, index) if settings.admin else None
    return dataclasses.replace(
        settings, listen_all=listen_all, listen=listen_all[0], admin=admin, workers=1
    )
