"""Profile `authz serve` under h2load with py-spy (sampling, native frames off): the realistic
request, 1,000 rules. Prints the functions with the most samples, self and inclusive.

    python -m bench profile [--seconds 8]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench import fixtures, h2load
from bench.grpc_load import LOAD_CORE, SERVER_CORE, assert_allows, authz_argv
from bench.procs import free_port, pinned, started, wait_port


def collapsed_top(raw: str, limit: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "self%  incl%  function"]
    for frame, count in own.most_common(limit):
        lines.append(f"{100 * count / total:5.1f}  {100 * inclusive[frame] / total:5.1f}  {frame}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profile")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--native", action="store_true", help="include C frames (grpc core, upb)")
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None and not Path(".venv/bin/py-spy").exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    spy = shutil.which("py-spy") or ".venv/bin/py-spy"
    key = fixtures.make_key("RS256")
    message = fixtures.check_request(key.token(lifetime=6 * 3600))
    with tempfile.TemporaryDirectory(prefix="authz-prof-") as name:
        tmp = Path(name)
        body = tmp / "check.bin"
        body.write_bytes(fixtures.grpc_frame(message.SerializeToString()))
        policies = fixtures.write_policies(tmp / "policies", 1000, [key])
        port = free_port()
        with started(
            pinned(authz_argv(policies, f"127.0.0.1:{port}"), SERVER_CORE), log=tmp / "authz.log"
        ) as proc:
            wait_port(port, proc, tmp / "authz.log")
            assert_allows(f"127.0.0.1:{port}", message)
            load = threading.Thread(
                target=h2load.grpc_check,
                kwargs=dict(
                    url=f"http://127.0.0.1:{port}",
                    body=body,
                    requests=4000 * (args.seconds + 4),
                    duration_s=args.seconds + 10,
                    clients=4,
                    streams=16,
                    cores=LOAD_CORE,
                ),
            )
            load.start()
            out = tmp / "profile.txt"
            subprocess.run(
                [
                    spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    *(["--native"] if args.native else ["--nonblocking"]),
                ],
                capture_output=True,
                timeout=args.seconds + 30,
                check=True,
            )
            load.join(args.seconds + 60)
            print(collapsed_top(out.read_text()))
    return 0
