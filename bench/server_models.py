"""Which gRPC server model serves today's `AuthorizationService.check` fastest, by measurement.

The same service (`build_app`: policies, keys, engine, metrics observer; `check` unchanged) is
served by
* `aio`:        grpc.aio, as `authz serve` does today (without health and reflection here, as
                for the others, so only the server model differs);
* `sync-T`:     grpcio's synchronous server with a T-thread pool (`build_sync_server`);
and, as ceilings, the empty servicers (static OK) of both models. Each server is one process
pinned to one core; they are measured directly (h2load, pinned to the other core) and behind a
real Envoy (wrk; Envoy and wrk on the other core), in alternating rounds; medians, ratios.

Serving process: `python -m bench serve model MODEL ADDRESS POLICY_DIR` where MODEL is
`aio`, `sync-T`, `empty-aio` or `empty-sync-T`.

Whole services: `serve` is this checkout's `authz serve` (health, reflection, metrics
interceptor: what ships), `serve@DIR` the `authz serve` of the code in DIR (e.g. a `git archive`
of an older main, to compare server models release to release), `serve-tN` this checkout's with
`--grpc-threads N`. Pick models on the command line:
`python -m bench server-models ROUNDS MODEL...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from bench import envoy_load, fixtures, h2load
from bench.grpc_load import assert_allows, authz_argv
from bench.procs import CORES, PYTHON, free_port, pinned, started, wait_port

SERVER_CORE = "0"
LOAD_CORE = "1" if CORES > 1 else "0"
_OPTIONS = [("grpc.max_concurrent_streams", 1024), ("grpc.so_reuseport", 0)]


class _SyncCheck(external_auth_pb2_grpc.AuthorizationServicer):
    """Check on grpcio's sync server: the service's synchronous `check`, as it is."""

    def __init__(self, check: Any) -> None:
        self._check = check

    def Check(self, request: Any, context: Any) -> external_auth_pb2.CheckResponse:
        return self._check(request)  # type: ignore[no-any-return]


def build_sync_server(service: Any, listen: Sequence[str], threads: int) -> grpc.Server:
    """A grpcio sync server with Check bound to every `listen` address; not started.

    The wiring a switch of `authz serve` to the sync model would use (health and reflection
    have sync servicers too: `grpc_health.v1.health.HealthServicer`, `reflection`)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check"),
        options=_OPTIONS,
        maximum_concurrent_rpcs=None,
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_SyncCheck(service.check), server)  # type: ignore[no-untyped-call]
    for address in listen:
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot listen on {address}")
    return server


_OK = external_auth_pb2.CheckResponse()
_OK.status.code = 0


def _empty_check(_message: Any) -> external_auth_pb2.CheckResponse:
    return _OK


class _AioCheck(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, check: Any) -> None:
        self._check = check

    async def Check(self, request: Any, context: Any) -> external_auth_pb2.CheckResponse:
        return self._check(request)  # type: ignore[no-any-return]


def serve(argv: list[str]) -> None:
    """`MODEL ADDRESS POLICIES`: one model serving until SIGTERM."""
    model, address, policies = argv
    check: Any = _empty_check
    if not model.startswith("empty"):
        from authz.app import build_app
        from authz.config import Settings

        app = build_app(Settings(policies=policies))
        if not app.keys.wait_ready(30):
            raise SystemExit("keys did not load")
        check = app.service.check
    kind = model.removeprefix("empty-")
    if kind == "aio":

        async def main() -> None:
            server = grpc.aio.server(options=_OPTIONS)
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_AioCheck(check), server)  # type: ignore[no-untyped-call]
            server.add_insecure_port(address)
            await server.start()
            await server.wait_for_termination()

        asyncio.run(main())
        return
    threads = int(kind.removeprefix("sync-"))

    class _Service:
        pass

    service = _Service()
    service.check = check  # type: ignore[attr-defined]
    server = build_sync_server(service, [address], threads)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1)


@contextlib.contextmanager
def _servers(
    tmp: Path, models: Sequence[str], policies: Path, message: Any
) -> Iterator[dict[str, int]]:
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        for model in models:
            port = free_port()
            log = tmp / f"{model.replace('/', '_')}-{port}.log"
            env: dict[str, str] = {}
            if model.startswith(("serve-t", "serve@")) or model == "serve":
                argv = authz_argv(policies, f"127.0.0.1:{port}")
                if model.startswith("serve-t"):
                    env["AUTHZ_GRPC_THREADS"] = model.removeprefix("serve-t")
                if model.startswith("serve@"):
                    # -P: not the working directory (this checkout) ahead of PYTHONPATH.
                    argv = [argv[0], "-P", *argv[1:]]
                    env["PYTHONPATH"] = model.removeprefix("serve@")
            else:
                argv = [PYTHON, "-m", "bench", "serve", "model", model, f"127.0.0.1:{port}"]
                argv.append(str(policies))
            proc = stack.enter_context(started(pinned(argv, SERVER_CORE), log=log, env=env))
            wait_port(port, proc, log)
            if not model.startswith("empty"):
                assert_allows(f"127.0.0.1:{port}", message)
            ports[model] = port
        yield ports


def compare(
    *,
    models: Sequence[str] = ("aio", "sync-4", "sync-8", "sync-16", "empty-aio", "empty-sync-8"),
    rounds: int = 3,
    requests: int = 6000,
    seconds: float = 4,
) -> dict[str, Any]:
    """Direct (h2load) and behind Envoy (wrk), alternating; returns per-round req/s."""
    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    message = fixtures.check_request(token)
    direct: dict[str, list[float]] = {m: [] for m in models}
    envoy: dict[str, list[float]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory(prefix="authz-bench-models-") as name:
        tmp = Path(name)
        policies = fixtures.write_policies(tmp / "policies", 1000, [key])
        body = tmp / "check.bin"
        body.write_bytes(fixtures.grpc_frame(message.SerializeToString()))
        with _servers(tmp, models, policies, message) as ports, contextlib.ExitStack() as stack:
            listeners = {
                m: stack.enter_context(envoy_load.envoy(tmp, "authz", [ports[m]], cores=LOAD_CORE))
                for m in models
            }
            for m in models:  # warm-up
                _direct(ports[m], body, requests // 5)
                envoy_load.wrk(listeners[m], token, seconds=1, cores=LOAD_CORE)
            for r in range(rounds):
                order = list(models) if r % 2 == 0 else list(models)[::-1]
                for m in order:
                    direct[m].append(_direct(ports[m], body, requests))
                    envoy[m].append(
                        envoy_load.wrk(listeners[m], token, seconds=seconds, cores=LOAD_CORE)
                    )
    return {
        "direct": direct,
        "envoy": envoy,
        "direct_median": {m: statistics.median(v) for m, v in direct.items()},
        "envoy_median": {m: statistics.median(v) for m, v in envoy.items()},
    }


def _direct(port: int, body: Path, requests: int) -> float:
    run = h2load.grpc_check(
        f"http://127.0.0.1:{port}",
        body,
        requests=requests,
        duration_s=60,
        clients=4,
        streams=16,
        cores=LOAD_CORE,
    )
    if run.failed:
        raise RuntimeError(f"{run.failed} h2load requests failed")
    return run.requests_per_second


def table(result: dict[str, Any]) -> list[str]:
    """Markdown rows: model, direct req/s per round and median, behind Envoy likewise."""
    dm, em = result["direct_median"], result["envoy_median"]
    # The reference: `aio` when measured, else the first `serve@DIR` (the older service).
    base = "aio" if "aio" in dm else next((m for m in dm if m.startswith("serve@")), "aio")
    aio_d, aio_e = dm.get(base) or 1.0, em.get(base) or 1.0
    lines = [
        f"| server (1 core) | direct Check/s per round | median | vs {base} | behind Envoy req/s "
        f"per round | median | vs {base} |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for m in dm:
        d = ", ".join(f"{v:,.0f}" for v in result["direct"][m])
        e = ", ".join(f"{v:,.0f}" for v in result["envoy"][m])
        lines.append(
            f"| {m} | {d} | {dm[m]:,.0f} | {dm[m] / aio_d:.2f}x | {e} | {em[m]:,.0f} | "
            f"{em[m] / aio_e:.2f}x |"
        )
    return lines


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 3
    result = compare(rounds=rounds, models=argv[1:]) if argv[1:] else compare(rounds=rounds)
    print("\n".join(table(result)))
    return 0
