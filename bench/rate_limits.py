"""What a rate limit adds to a check, in process: the same realistic check (1,000 rules, mTLS
principal) against the same policy set without and with one `rate_limits` entry that matches it
(keyed by the principal, a limit it never reaches), counted in the process and in Redis.

    python -m bench.rate_limits [--redis redis://127.0.0.1:6379/0] [--calls N] [--rounds N]

Without --redis a real redis-server is started on a free loopback port when one is installed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from authz.config import Settings
from authz.engine import Engine
from authz.identity import IdentityResolver, KeyRegistry
from authz.limits import Limiter, open_counter
from authz.policy import PolicyStore, load_policy_set
from authz.server import AuthorizationService
from bench import fixtures
from bench.inproc import _repeat
from bench.timing import alternate

LIMIT = {
    "name": "per-workload",
    "to": [{"paths": ["/{**}"]}],
    "key": "principal",
    "limit": 1_000_000_000,
    "per": "hour",
}


def service(root: Path, *, limited: bool, store: str | None) -> tuple[AuthorizationService, object]:
    key = fixtures.make_key("RS256")
    directory = fixtures.write_policies(root, 1000, [key])
    if limited:
        policy = json.loads((directory / "bench.yaml").read_text())
        policy["rate_limits"] = [LIMIT]
        (directory / "bench.yaml").write_text(json.dumps(policy))
    policy_set = load_policy_set(str(directory))
    registry = KeyRegistry()
    registry.ensure(policy_set.jwt_providers)
    registry.wait_ready(10)
    settings = Settings(policies=str(directory))
    counter = open_counter(store, max_keys=1_000_000)
    engine = Engine(
        PolicyStore(policy_set), IdentityResolver(settings, registry), limiter=Limiter(counter)
    )
    return AuthorizationService(engine, settings), counter


def compare(store: str | None, *, calls: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="authz-bench-rl-") as tmp:
        none, _ = service(Path(tmp) / "none", limited=False, store=None)
        local, _ = service(Path(tmp) / "local", limited=True, store=None)
        variants = {
            "no limit": _repeat(lambda: none.check(request)),
            "one limit, in process": _repeat(lambda: local.check(request)),
        }
        request = fixtures.check_request(None)
        assert none.check(request).HasField("ok_response")
        assert local.check(request).HasField("ok_response")
        counters = []
        if store is not None:
            shared, counter = service(Path(tmp) / "redis", limited=True, store=store)
            counters.append(counter)
            assert shared.check(request).HasField("ok_response")
            variants["one limit, Redis"] = _repeat(lambda: shared.check(request))
        results = alternate(variants, calls=calls, rounds=rounds)
        for counter in counters:
            status = counter.status()  # type: ignore[attr-defined]
            assert status["state"] == "shared", status
            counter.close()  # type: ignore[attr-defined]
    base = results["no limit"].median
    return {name: r.median / base for name, r in results.items()} | {
        f"{name} (us)": r.median * 1e6 for name, r in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rate_limits")
    parser.add_argument("--redis", help="redis://HOST:PORT/DB (default: start one)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.redis:
        print(json.dumps(compare(args.redis, calls=args.calls, rounds=args.rounds), indent=2))
        return
    from tests.support.redis import RedisServer

    with RedisServer() as redis:
        print(json.dumps(compare(redis.url, calls=args.calls, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
