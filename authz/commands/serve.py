"""`authz serve`: run the ext_authz service (gRPC Check API, and the HTTP door with --http-listen).

Its flags are derived from the settings declared in authz.config (one per setting, plus
`--config`); a flag not given leaves the value to the environment, the config file or the
default (see authz.config_file).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys

from authz import logs
from authz.config import Entry, Settings, settings_table
from authz.errors import ConfigError, PolicyError
from authz.workers import (
    EXIT_LISTEN,
    Supervisor,
    check_worker_addresses,
    for_worker,
    worker_index,
)

NAME = "serve"
HELP = "run the ext_authz service (gRPC, and HTTP with --http-listen)"
EXIT_CONFIG = 1

log = logging.getLogger("authz")


def configure(parser: argparse.ArgumentParser) -> None:
    # The full synopsis is some forty lines, and a misspelt flag's error would follow it.
    parser.usage = "%(prog)s [--policies DIR] [--listen ADDRESS] [--admin HOST:PORT] [...]"
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (default: $AUTHZ_CONFIG, else none)"
    )
    for entry in settings_table().values():
        _add_flag(parser, entry)


def _add_flag(parser: argparse.ArgumentParser, entry: Entry) -> None:
    meta = entry.meta
    shown = ",".join(entry.default) if isinstance(entry.default, tuple) else entry.default
    default = "off" if shown is None or shown == "" else str(shown).lower()
    help_text = f"{entry.help} (default: {default}; ${entry.env})".replace("%", "%%")
    # default=None everywhere: "not given", so the environment and the config file can fill it.
    options: dict[str, object] = {"dest": entry.key, "default": None, "help": help_text}
    if entry.type is bool:
        options["action"] = argparse.BooleanOptionalAction
    else:
        if isinstance(entry.default, tuple):
            options["action"] = "append"
        elif entry.type in (int, float):
            options["type"] = entry.type
        if meta.const is not None:
            options.update(nargs="?", const=meta.const)
        if meta.choices:
            options["choices"] = meta.choices
        else:
            options["metavar"] = meta.metavar or entry.key.rsplit(".", 1)[-1].upper()
    parser.add_argument(entry.flag, **options)  # type: ignore[arg-type]


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags, the environment and the config file. Raises ConfigError."""
    from authz.config_file import load_settings

    flags = {key: getattr(args, key, None) for key in settings_table()}
    return load_settings(getattr(args, "config", None), environ=os.environ, flags=flags)


def run(args: argparse.Namespace) -> int:
    from authz.app import build_app, serve
    from authz.listen import ListenError
    from authz.tls.material import MaterialError

    index = worker_index()
    # Start-up errors are for a person reading the terminal or `kubectl logs`: plain lines,
    # naming the worker that failed under --workers.
    who = "authz" if index is None else f"authz [worker {index}]"

    def fail(code: int, *lines: str) -> int:
        print(f"{who}: " + "\n  ".join(lines), file=sys.stderr)
        return code

    try:
        settings = settings_from(args)
    except ConfigError as error:
        return fail(EXIT_CONFIG, str(error))
    if not settings.grpc and not settings.http_listen:
        return fail(EXIT_CONFIG, "--no-grpc: nothing to serve without --http-listen ADDRESS")
    supervising = index is None and settings.workers > 1
    logs.configure(settings.log_level, settings.log_format, worker=index, supervisor=supervising)
    if index is None:  # the workers' addresses, or one process's gRPC, HTTP and admin ones
        try:
            check_worker_addresses(settings)
        except ConfigError as error:
            return fail(EXIT_LISTEN, str(error))
    if supervising:
        # Each worker checks its TLS files too; checked here first, a pair that cannot be served
        # is one line and exit 2, not every worker failing until the supervisor gives up.
        try:
            check_tls_files(settings)
        except ConfigError as error:
            return fail(EXIT_CONFIG, str(error))
        except MaterialError as error:
            return fail(EXIT_LISTEN, str(error))
        return Supervisor(settings.workers, getattr(args, "argv", sys.argv[1:])).run()
    raise_open_file_limit()
    if index is not None:
        settings = for_worker(settings, index)
    try:
        app = build_app(settings)
    except PolicyError as error:
        problems = [str(problem) for problem in error.problems]
        return fail(EXIT_CONFIG, f"the policies in {settings.policies} cannot be used:", *problems)
    except ConfigError as error:
        return fail(EXIT_CONFIG, str(error))
    try:
        asyncio.run(serve(app))
    except (ListenError, MaterialError) as error:
        app.close()
        return fail(EXIT_LISTEN, str(error))
    return 0


def check_tls_files(settings: Settings) -> None:
    """Read and check every TLS pair `settings` names (ConfigError, MaterialError)."""
    from authz.tls.certs import ServingCertificates
    from authz.tls.plan import tls_plan

    ServingCertificates(tls_plan(settings)).load_all()


def raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each connection is a file descriptor, and the
    common soft limit of 1024 is reached by a few hundred Envoy pods' connection pools."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        log.info("open file limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        log.warning("open file limit stays %d (hard %d): %s", soft, hard, error)
        return
    log.info("open file limit raised from %d to %d", soft, hard)
