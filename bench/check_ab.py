"""Two checkouts' in-process check, A/B: `AuthorizationService.check` as `build_app` wires it (the
real observers, the decision cache on), 1,000 rules, the realistic request, on a cache hit.

    python -m bench check-ab BASE_DIR NEW_DIR [--rounds 7] [--calls 5000]

Each round runs one fresh process per checkout (with PYTHONPATH and cwd set to it), in
alternating order, and the medians are compared, so a busy neighbour skews both sides alike.
Make BASE_DIR with `git worktree add --detach /tmp/base main`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Run in the checkout under test: prints {"file": authz.__file__, variant: us per check}.
_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import authz
from authz.app import build_app
from authz.config import Settings
from bench import fixtures

key = fixtures.make_key("RS256")
with tempfile.TemporaryDirectory() as tmp:
    app = build_app(Settings(policies=str(fixtures.write_policies(Path(tmp), 1000, [key]))))
    app.keys.wait_ready(10)
    messages = {
        "hit, warm RS256": fixtures.check_request(key.token(lifetime=6 * 3600)),
        "hit, mTLS only": fixtures.check_request(None),
    }
    out = {"file": authz.__file__}
    calls = int(sys.argv[1])
    check = app.service.check
    for name, message in messages.items():
        assert check(message).HasField("ok_response")
        for _ in range(500):
            check(message)
        started = time.perf_counter()
        for _ in range(calls):
            check(message)
        out[name] = (time.perf_counter() - started) / calls * 1e6
    app.close()
    print(json.dumps(out))
"""


def _run(root: Path, calls: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(calls)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout)
    if not str(out.pop("file")).startswith(str(root)):
        raise SystemExit(f"authz was not imported from {root}")
    return {name: float(us) for name, us in out.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench check-ab")
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    sides = {"before": args.base.resolve(), "after": args.new.resolve()}
    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for side in order:
            for name, us in _run(sides[side], args.calls).items():
                results[side].setdefault(name, []).append(us)
    for name, before in results["before"].items():
        after = results["after"][name]
        b, a = statistics.median(before), statistics.median(after)
        print(
            f"{name:16s} before {b:6.1f} us  after {a:6.1f} us  after/before {a / b:.3f}"
            f"  (medians of {args.rounds}; before {min(before):.1f}-{max(before):.1f},"
            f" after {min(after):.1f}-{max(after):.1f})"
        )
    return 0
