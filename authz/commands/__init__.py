"""Subcommands of `authz`. Each module has NAME, HELP, configure(parser) and run(args) -> int."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Protocol, cast

from authz.commands import (
    apikey,
    check,
    demo,
    envoy_config,
    explain,
    export,
    lint,
    replay,
    schema,
    serve,
    test_cmd,
    usage,
    validate,
)


class Command(Protocol):
    NAME: str
    HELP: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


_MODULES: list[ModuleType] = [serve, check, envoy_config, demo]
_MODULES += [validate, lint, test_cmd, explain, schema, apikey]  # tools for policy authors
_MODULES += [usage, replay]  # audits of the decision log
_MODULES += [export]  # policies as Envoy's own filters
COMMANDS: list[Command] = [cast(Command, module) for module in _MODULES]
