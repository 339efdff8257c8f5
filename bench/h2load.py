"""h2load runs and the parsing of their summaries and per-request logs."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def available() -> bool:
    return shutil.which("h2load") is not None


@dataclass(frozen=True, slots=True)
class Run:
    requests_per_second: float
    succeeded: int
    failed: int


def grpc_check(
    url: str,
    body: Path,
    *,
    requests: int,
    duration_s: float,
    clients: int,
    streams: int,
    cores: str | None,
) -> Run:
    """Closed-loop gRPC Check load: `clients` connections x `streams` concurrent streams.

    Bounded by both `requests` and a process timeout; h2load stops at the request count."""
    from bench.procs import pinned

    argv = pinned(
        [
            "h2load",
            "-n",
            str(requests),
            "-c",
            str(clients),
            "-m",
            str(streams),
            "-t",
            "1",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"{url}{CHECK_PATH}",
        ],
        cores,
    )
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    ).stdout
    return parse(out)


def parse(out: str) -> Run:
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    reqs = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out
    )
    if rps is None or reqs is None:
        raise RuntimeError(f"h2load output not understood:\n{out[-2000:]}")
    return Run(float(rps.group(1)), int(reqs.group(1)), int(reqs.group(2)))


def latencies_us(log: Path) -> list[float]:
    """Per-request times (µs) from h2load's --log-file (start µs, status, duration µs)."""
    values: list[float] = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "200":
            values.append(float(parts[2]))
    return values
