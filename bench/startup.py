"""Start-up time: `authz serve` from exec to gRPC health SERVING, on the example policies.

.venv/bin/python -m bench startup [--rounds 5] [--policies policies]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.procs import free_port


def once(policies: str, timeout: float = 30.0) -> float:
    address = f"127.0.0.1:{free_port()}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authz",
            "serve",
            "--policies",
            policies,
            "--listen",
            address,
            "--no-watch",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.perf_counter() - started < timeout:
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - started
                except grpc.RpcError:
                    time.sleep(0.02)
        raise RuntimeError(f"not SERVING within {timeout} s")
    finally:
        process.terminate()
        process.wait(30)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench startup",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--policies", default="policies")
    args = parser.parse_args(argv)
    times = [once(args.policies) for _ in range(args.rounds)]
    print(
        f"start-up to SERVING: median {statistics.median(times):.2f} s "
        f"(rounds: {', '.join(f'{t:.2f}' for t in times)})"
    )
    return 0
