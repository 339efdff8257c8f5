"""Check over gRPC with h2load: `authz serve` with the realistic request against the empty
servicer, both as separate processes pinned to the same core, h2load on the other core,
alternating rounds in one run."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from bench import fixtures, h2load
from bench.procs import CORES, PYTHON, free_port, pinned, started, wait_port

SERVER_CORE = "0"
LOAD_CORE = "1" if CORES > 1 else "0"


@dataclass(frozen=True, slots=True)
class Comparison:
    rounds: dict[str, list[float]]  # requests/s per round

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])


def authz_argv(policies: Path, listen: str, workers: int | None = None) -> list[str]:
    # `python -m authz` with this interpreter: in a worktree without its own .venv the `authz`
    # script on PATH (if any) would run another checkout's code.
    argv = [
        PYTHON,
        "-m",
        "authz",
        "serve",
        "--policies",
        str(policies),
        "--listen",
        listen,
        "--no-watch",
        "--log-level",
        "warning",
    ]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def assert_allows(address: str, message: external_auth_pb2.CheckRequest) -> None:
    """One real Check first: a bench of a service that denies (or errors) measures nothing."""
    with grpc.insecure_channel(address) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        grpc.channel_ready_future(channel).result(timeout=30)
        response = stub.Check(message, timeout=10)
    if not response.HasField("ok_response"):
        raise RuntimeError(f"the bench request was not allowed: {response}")


@contextlib.contextmanager
def servers(
    tmp: Path, message: external_auth_pb2.CheckRequest, keys: list[fixtures.Key]
) -> Iterator[dict[str, int]]:
    """Both servers up, pinned to SERVER_CORE; yields name -> port."""
    policies = fixtures.write_policies(tmp / "policies", 1000, keys)
    authz_port, empty_port = free_port(), free_port()
    with (
        started(
            pinned(authz_argv(policies, f"127.0.0.1:{authz_port}"), SERVER_CORE),
            log=tmp / "authz.log",
        ) as a,
        started(
            pinned(
                [PYTHON, "-m", "bench", "serve", "empty-grpc", f"127.0.0.1:{empty_port}"],
                SERVER_CORE,
            ),
            log=tmp / "empty.log",
        ) as e,
    ):
        wait_port(authz_port, a, tmp / "authz.log")
        wait_port(empty_port, e, tmp / "empty.log")
        assert_allows(f"127.0.0.1:{authz_port}", message)
        yield {"authz serve (realistic)": authz_port, "empty servicer": empty_port}


def compare(*, rounds: int, requests: int, clients: int = 4, streams: int = 16) -> Comparison:
    key = fixtures.make_key("RS256")
    message = fixtures.check_request(key.token(lifetime=6 * 3600))
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp_name:
        tmp = Path(tmp_name)
        body = tmp / "check.bin"
        body.write_bytes(fixtures.grpc_frame(message.SerializeToString()))
        with servers(tmp, message, [key]) as ports:
            names = list(ports)
            results: dict[str, list[float]] = {n: [] for n in names}
            for name in names:  # warm-up
                _one(ports[name], body, requests // 5, clients, streams)
            for r in range(rounds):
                order = names if r % 2 == 0 else names[::-1]
                for name in order:
                    results[name].append(_one(ports[name], body, requests, clients, streams))
    return Comparison(results)


def _one(port: int, body: Path, requests: int, clients: int, streams: int) -> float:
    run = h2load.grpc_check(
        f"http://127.0.0.1:{port}",
        body,
        requests=requests,
        duration_s=60,
        clients=clients,
        streams=streams,
        cores=LOAD_CORE,
    )
    if run.failed:
        raise RuntimeError(f"{run.failed} h2load requests failed")
    return run.requests_per_second
