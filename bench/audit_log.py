"""`python -m bench audit-log [--lines N]`: `authz usage` and `authz replay` throughput.

A decision log of N lines (default 1,000,000) is generated from the example policy set: a
base of distinct requests (workloads, demo-issuer tokens good, expired, for another audience
or tampered, odd and refused paths) is decided by the real engine and written by the real
decision-log record code, then repeated with fresh times and ids up to N lines. Usage and
replay then read the file as the commands do (LogReader: line by line) and the lines per second
are printed, with the peak resident memory of the process (bounded: it does not grow with N).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt

from authz.audit.logs import LogReader
from authz.audit.replay import replay
from authz.audit.usage import measure
from authz.config import Settings
from authz.engine import Engine
from authz.errors import AuthzError
from authz.identity import KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Request
from authz.observe.decision_log import decision_record
from authz.policy import PolicyStore, load_policy_set
from authz.request.paths import normalize_path

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
DEMO_KEY = REPO / "examples/demo-issuer/private-key.pem"
ISSUER = "https://id.shop.example"

PRINCIPALS = [
    "",
    "spiffe://cluster.local/ns/shop/sa/frontend",
    "spiffe://cluster.local/ns/shop/sa/orders",
    "spiffe://cluster.local/ns/ops/sa/console",
    "spiffe://evil.example/ns/shop/sa/frontend",
]
PATHS = [
    "/healthz",
    "/api/orders",
    "/api/orders/{n}",
    "/api/orders/{n}/items",
    "/api/cart/items",
    "/api/payments",
    "/api/payments/p-{n}/capture",
    "/api/payments/p-{n}/refund",
    "/admin/stats",
    "/debug/pprof",
    "/api/orders%2F{n}",
]
METHODS = ["GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE"]
HOSTS = ["shop.example.com", "orders.shop.svc.cluster.local", "unknown.example.org"]


def random_token(
    rng: random.Random,
    key: str,
    now: int,
    subjects: tuple[str, ...] = ("alice", "bob", "carol", "dave"),
) -> str | None:
    """A random bearer for the demo issuer: none, good, expired, for another audience or
    tampered (the replay tests draw theirs here too)."""
    kind = rng.choice(["none", "none", "good", "good", "expired", "audience", "tampered"])
    if kind == "none":
        return None
    claims = {
        "iss": ISSUER,
        "sub": rng.choice(subjects),
        "aud": "other-api" if kind == "audience" else "shop-api",
        "scope": rng.choice(["cart", "orders.read", "cart orders.read", "profile"]),
        "iat": now - 7200,
        "exp": now - 3600 if kind == "expired" else now + 3600,
    }
    text = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "demo-2026"})
    return (
        text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
        if kind == "tampered"
        else text
    )


def base_records(count: int, seed: int = 18, policies: Path = POLICIES) -> list[dict[str, Any]]:
    """`count` records as the service would log them for random requests to `policies`."""
    policy_set = load_policy_set(policies)
    keys = KeyRegistry()
    keys.ensure(policy_set.jwt_providers)
    if not keys.wait_ready(10):
        raise RuntimeError("the demo keys did not load")
    key = DEMO_KEY.read_text()
    try:
        engine = Engine(PolicyStore(policy_set), ServiceResolver(Settings(), keys))
        rng = random.Random(seed)
        now = int(time.time())
        records = []
        for i in range(count):
            raw = rng.choice(PATHS).format(n=rng.randrange(1, 500))
            bearer = random_token(rng, key, now)
            headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
            source = f"10.0.{rng.randrange(0, 4)}.{rng.randrange(1, 250)}"
            try:
                path, query = normalize_path(raw)
            except AuthzError as error:
                records.append(decision_record(now + i, None, engine.refuse(error, source), 0.0))
                continue
            request = Request(
                method=rng.choice(METHODS),
                path=path,
                host=rng.choice(HOSTS),
                raw_path=raw,
                query=query,
                headers=headers,
                source_ip=source,
                peer_principal=rng.choice(PRINCIPALS),
            )
            records.append(decision_record(now + i, request, engine.check(request), 0.0))
        return records
    finally:
        keys.close()


def write_log(path: Path, lines: int, base: list[dict[str, Any]]) -> None:
    """`lines` records: the base repeated, each copy with its own decision id."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            record = base[i % len(base)]
            record["decision_id"] = f"bench-{i:x}"
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(lines: int, base_count: int = 5000) -> dict[str, float]:
    policy_set = load_policy_set(POLICIES)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "decisions.log"
        base = base_records(min(base_count, lines))
        write_log(log, lines, base)
        size_mib = log.stat().st_size / 2**20
        rss_before = _peak_rss_mib()
        started = time.perf_counter()
        usage = measure(policy_set, LogReader([str(log)]))
        usage_s = time.perf_counter() - started
        started = time.perf_counter()
        report = replay(policy_set, LogReader([str(log)]))
        replay_s = time.perf_counter() - started
    assert usage.records == lines and not report.groups, "an unchanged replay must flip nothing"
    return {
        "lines": lines,
        "log_mib": round(size_mib, 1),
        "usage_lines_per_s": round(lines / usage_s),
        "replay_lines_per_s": round(lines / replay_s),
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after": round(_peak_rss_mib(), 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench audit-log", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.lines), indent=2))
    return 0
