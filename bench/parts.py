"""The parts of `python -m bench run`, one table: what each measures, what it needs, how it runs.

A part returns the entries it adds to the results (usually one, under its own name); the report
(bench/report.py) reads them by those names. A part whose tool is missing is skipped, and the
report says which and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import (
    envoy_load,
    export_load,
    grpc_load,
    h2load,
    http_mode,
    inproc,
    introspection,
    latency,
    server_models,
)


@dataclass(frozen=True, slots=True)
class Size:
    """How long a run is: `quick` (about a minute in all) or the full one."""

    quick: bool

    def pick(self, quick: int | float, full: int | float) -> Any:
        return quick if self.quick else full

    @property
    def rounds(self) -> int:
        return 3 if self.quick else 7


def _needs(*tools: tuple[str, Callable[[], bool]]) -> Callable[[], str | None]:
    """None when every tool is there, else the names of the missing ones."""

    def missing() -> str | None:
        absent = [name for name, available in tools if not available()]
        return " or ".join(absent) + " is not installed" if absent else None

    return missing


def _always() -> str | None:
    return None


ENVOY_WRK = ("Envoy or wrk", envoy_load.available)
H2LOAD = ("h2load", h2load.available)


def _engine(size: Size) -> dict[str, Any]:
    evaluated, checked = inproc.engine_by_rules(
        (10, 100, 1000, 10_000), calls=size.pick(300, 3000), rounds=size.rounds
    )
    return {"engine": {"evaluate": evaluated, "check": checked}}


def _identity(size: Size) -> dict[str, Any]:
    return {
        "identity": inproc.identity_by_algorithm(calls=size.pick(50, 300), rounds=size.rounds),
        "full_check": inproc.full_check(calls=size.pick(300, 3000), rounds=size.rounds),
    }


def _cache(size: Size) -> dict[str, Any]:
    return {"cache": inproc.decision_cache(calls=size.pick(300, 2000), rounds=size.rounds)}


def _introspection(size: Size) -> dict[str, Any]:
    return {
        "introspection": introspection.cache_hit_vs_warm_jwt(
            calls=size.pick(300, 3000), rounds=size.rounds
        )
    }


def _grpc(size: Size) -> dict[str, Any]:
    return {"grpc": grpc_load.compare(rounds=size.rounds, requests=size.pick(2000, 10_000))}


def _e2e(size: Size) -> dict[str, Any]:
    return {
        "e2e": envoy_load.compare(
            rounds=size.pick(2, 5),
            seconds=size.pick(2, 5),
            latency_rate=200,
            latency_seconds=size.pick(3, 8),
        )
    }


def _peers(size: Size) -> dict[str, Any]:
    return {"peers": envoy_load.peers(rounds=size.pick(2, 5), seconds=size.pick(2, 5))}


def _models(size: Size) -> dict[str, Any]:
    return {
        "models": server_models.compare(
            rounds=size.pick(2, 5), requests=size.pick(2000, 6000), seconds=size.pick(2, 4)
        )
    }


def _http(size: Size) -> dict[str, Any]:
    return {"http_mode": http_mode.compare(rounds=size.pick(2, 5), seconds=size.pick(2, 5))}


def _latency(size: Size) -> dict[str, Any]:
    return {"latency": latency.compare(rounds=size.pick(2, 5), seconds=size.pick(3, 6))}


def _export(size: Size) -> dict[str, Any]:
    return {"export": export_load.compare(rounds=size.rounds, seconds=3)}


@dataclass(frozen=True, slots=True)
class Part:
    name: str  # what --parts names
    title: str  # what the report's "skipped" list calls it
    missing: Callable[[], str | None]  # why it cannot run here, or None
    run: Callable[[Size], dict[str, Any]]


PARTS: tuple[Part, ...] = (
    Part("engine", "engine", _always, _engine),
    Part("identity", "identity", _always, _identity),
    Part("cache", "decision cache", _always, _cache),
    Part("introspection", "token introspection", _always, _introspection),
    Part("grpc", "gRPC Check with h2load", _needs(H2LOAD), _grpc),
    Part("e2e", "end to end", _needs(ENVOY_WRK), _e2e),
    Part("peers", "peers", _needs(ENVOY_WRK), _peers),
    Part("models", "server models", _needs(ENVOY_WRK, H2LOAD), _models),
    Part("http", "HTTP mode", _needs(ENVOY_WRK), _http),
    Part("export", "exported policy", _needs(ENVOY_WRK), _export),
    Part("latency", "fixed-rate latency", _needs(ENVOY_WRK, H2LOAD), _latency),
)
