#!/usr/bin/env python
"""Soak the real service with a mixed, hostile workload while faults are injected.

    .venv/bin/python -m tests.hostile.soak --seconds 60 --max-checks 200000 --clients 4

Starts `python -m authz serve` and a JWKS server, both on 127.0.0.1, and runs a few concurrent
gRPC clients sending allowed and denied requests, bad tokens, bad and over-long paths and
garbage bytes. Meanwhile the JWKS server goes down and answers garbage, a policy file is
half-written (the last good set must stay in force) and the policy is rewritten twice (answers
must follow). Every check's right answer is known from an oracle written from docs/policy.md
(tests/hostile/service.py), not from the service's code. At the end the service gets SIGTERM
and must exit 0.

Prints checks sent, answered, refused, wrong answers, allows on error and the service's peak
RSS (VmHWM from /proc). Exits 1 on any wrong answer or allow on error, or when the service
does not exit cleanly. Bounded by --seconds and --max-checks; stops by itself.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.hostile.forge import forge
from tests.hostile.service import (
    AUDIENCE,
    HOST,
    INVALID,
    NONE,
    VALID,
    Expected,
    ServiceProcess,
    check_request,
    oracle,
    parse_response,
    policy_yaml,
    protos,
    response_status,
    token_state,
)
from tests.support.jwks_server import JwksServer
from tests.support.tokens import claims, make_key

# Request kinds, with weights. "error" kinds must never be allowed, whatever the policy says.
KINDS: dict[str, int] = {
    "public": 20,
    "user": 20,
    "admin": 10,
    "anonymous-api": 8,
    "bad-token": 12,
    "bad-path": 10,
    "too-large": 3,
    "garbage": 10,
    "mutated": 7,
}
ERROR_KINDS = frozenset({"bad-token", "bad-path", "too-large", "garbage", "mutated"})


@dataclass
class Stats:
    sent: int = 0
    answered: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    allows_on_error: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrong_answer(self, text: str, *, on_error: bool) -> None:
        with self.lock:
            self.wrong += 1
            self.allows_on_error += on_error
            if len(self.examples) < 20:
                self.examples.append(text)


class PolicyHistory:
    """Which `public` prefixes are acceptable, as a history: a check sent at version i and
    answered at version j may be judged by any policy in force between them."""

    def __init__(self, first: frozenset[str]) -> None:
        self._lock = threading.Lock()
        self._history: list[frozenset[str]] = [first]

    def version(self) -> int:
        with self._lock:
            return len(self._history) - 1

    def set(self, acceptable: frozenset[str]) -> None:
        with self._lock:
            self._history.append(acceptable)

    def between(self, start: int, end: int) -> frozenset[str]:
        with self._lock:
            return frozenset().union(*self._history[start : end + 1])


class Workload:
    """Builds requests of each kind, with the token state the oracle needs."""

    def __init__(self, issuer: str, rng: random.Random) -> None:
        key = make_key("ES256", kid="k1")
        now = time.time()
        self.key = key
        self.valid = [
            key.sign(claims(issuer, now=now, audience=AUDIENCE, lifetime=7200, subject=f"u{i}"))
            for i in range(64)
        ]
        payload = claims(issuer, now=now, audience=AUDIENCE, lifetime=7200)
        stranger = make_key("ES256", kid="k1")
        self.invalid = [
            forge({"alg": "none"}, payload),
            forge({"alg": "NONE", "kid": "k1"}, payload),
            stranger.sign(payload),  # right kid, wrong key
            make_key("ES256", kid="unknown").sign(payload),  # triggers a (rate-limited) refetch
            key.sign(claims(issuer, now=now - 7200, audience=AUDIENCE)),  # expired
            key.sign(claims(issuer, now=now, audience="other")),  # wrong audience
            key.sign(claims("https://evil.example", now=now, audience=AUDIENCE)),
            "not.a.token",
            "a" * 12_000,  # long, but under Limits.max_header_value_bytes (over it: 431)
            key.sign(payload) + "x",
        ]
        self.rng = rng

    def spell(self, path: str) -> str:
        """Another spelling of `path` (same normal form)."""
        r = self.rng
        choice = r.randrange(6)
        if choice == 0:
            return path.replace("/", "//", 1)
        if choice == 1:
            return "/x/.." + path
        if choice == 2:
            return path.replace("/", "/./", 1)
        if choice == 3 and len(path) > 1:
            return "/%" + f"{ord(path[1]):02X}" + path[2:]
        if choice == 4:
            return path + "?q=/../" + r.choice(["admin", "public"])
        return path

    def make(self, kind: str, public: str) -> tuple[str, str, str, dict[str, str], str]:
        """(method, host, raw path, headers, token state)."""
        r = self.rng
        n = r.randrange(1000)
        host = r.choice([HOST, HOST, "SHOP.example.com:8080", "shop.example.com."])
        if kind == "public":
            prefix = r.choice(
                ["public", "open"]
            )  # the other one is denied (or allowed after a flip)
            return "GET", host, self.spell(f"/{prefix}/item/{n}"), {}, NONE
        if kind == "user":
            token = r.choice(self.valid)
            method = r.choice(["GET", "POST", "DELETE"])
            return (
                method,
                host,
                self.spell(f"/api/orders/{n}"),
                {"authorization": f"Bearer {token}"},
                VALID,
            )
        if kind == "admin":
            headers, state = (
                ({"authorization": f"Bearer {r.choice(self.valid)}"}, VALID)
                if r.random() < 0.5
                else ({}, NONE)
            )
            raw = r.choice(
                [
                    f"/admin/{n}",
                    f"/{public}/../admin/{n}",
                    f"/%61dmin/{n}",
                    "/admin",
                    f"//admin/{n}",
                    f"/{public}/%2e%2e/admin",
                ]
            )
            return "GET", host, raw, headers, state
        if kind == "anonymous-api":
            return r.choice(["GET", "POST"]), host, f"/api/cart/{n}", {}, NONE
        if kind == "bad-token":
            token = r.choice(self.invalid)
            path = r.choice([f"/{public}/x", f"/api/x/{n}", "/admin/x"])
            return "GET", host, path, {"authorization": f"Bearer {token}"}, INVALID
        if kind == "bad-path":
            raw = r.choice(
                [
                    f"/{public}/..;/admin",
                    f"/{public}%2fx",
                    f"/{public}/\x00",
                    f"/{public}/%zz",
                    f"/{public}\\..\\admin",
                    f"/{public}/..%5Cadmin",
                    "admin",
                    f"/{public}/%0a",
                ]
            )
            return "GET", host, raw, {}, NONE
        if kind == "too-large":
            return "GET", host, f"/{public}/" + "a" * (9 * 1024), {}, NONE
        raise ValueError(kind)


def judge(expected: list[Expected], response: Any) -> bool:
    """True when the response is what one acceptable policy says."""
    status = response_status(response)
    allowed = response.status.code == 0
    return any(e.allowed == allowed and (allowed or e.status == status) for e in expected)


def decode_state(message: Any, workload: Workload) -> tuple[str, str, str, str]:
    http = message.attributes.request.http
    return http.method, http.host, http.path, token_state(http.headers, workload.valid)


def client(
    service: ServiceProcess,
    history: PolicyHistory,
    workload_seed: int,
    shared: Workload,
    stats: Stats,
    stop: threading.Event,
    budget: Callable[[], bool],
) -> None:
    # The same key and tokens as every other client (the JWKS serves that key), own randomness.
    rng = random.Random(workload_seed)
    workload = copy.copy(shared)
    workload.rng = rng
    external_auth_pb2, _ = protos()
    channel = service.channel()
    call = service.raw_check(channel)
    kinds, weights = zip(*KINDS.items(), strict=True)
    try:
        while not stop.is_set() and budget():
            kind = rng.choices(kinds, weights)[0]
            start = history.version()
            public = rng.choice(sorted(history.between(start, start)))
            data: bytes
            state: tuple[str, str, str, str] | None = None
            if kind in ("garbage", "mutated"):
                if kind == "garbage":
                    data = rng.randbytes(rng.randrange(0, 512))
                else:
                    method, host, raw, headers, token = workload.make(
                        rng.choice(["admin", "bad-token", "anonymous-api"]), public
                    )
                    buffer = bytearray(
                        check_request(method, host, raw, headers).SerializeToString()
                    )
                    for _ in range(rng.randrange(1, 6)):
                        buffer[rng.randrange(len(buffer))] = rng.randrange(256)
                    data = bytes(buffer)
            else:
                method, host, raw, headers, token = workload.make(kind, public)
                data = check_request(method, host, raw, headers).SerializeToString()
                state = (method, host, raw, token)
            with stats.lock:
                stats.sent += 1
                stats.by_kind[kind] += 1
            try:
                answer = parse_response(call(data, timeout=10.0))
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                with stats.lock:
                    stats.refused[f"{kind}:{code.name if code else '?'}"] += 1
                continue
            end = history.version()
            with stats.lock:
                stats.answered += 1
            if state is None:
                # Garbage: an allow is only right if the bytes decode to a request the policy
                # allows.
                if answer.status.code != 0:
                    continue
                try:
                    state = decode_state(external_auth_pb2.CheckRequest.FromString(data), workload)
                except Exception:
                    stats.wrong_answer(f"{kind}: undecodable bytes allowed", on_error=True)
                    continue
            method, host, raw, token = state
            expected = [
                oracle(method, host, raw, token, public=p) for p in history.between(start, end)
            ]
            if not judge(expected, answer):
                allowed = answer.status.code == 0
                on_error = allowed and (kind in ERROR_KINDS or not any(e.allowed for e in expected))
                stats.wrong_answer(
                    f"{kind}: {method} {host} {raw[:80]!r} token={token}: got "
                    f"{response_status(answer)}, expected {[(e.status, e.why) for e in expected]}",
                    on_error=on_error,
                )
    finally:
        channel.close()


def probe(service: ServiceProcess, public: str, bound: float = 20.0) -> bool:
    """Wait (bounded) until GET /<public>/probe is allowed: the policy naming it is in force."""
    data = check_request("GET", HOST, f"/{public}/probe").SerializeToString()
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            if parse_response(service.check_bytes(data)).status.code == 0:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    return False


def write_atomically(path: Path, text: str) -> None:
    # A hidden temporary name: the loader ignores names starting with '.'.
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Result:
    stats: Stats
    peak_rss_kib: int
    exit_code: int
    faults: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        s = self.stats
        return s.wrong == 0 and s.allows_on_error == 0 and self.exit_code == 0 and s.answered > 0


def run(
    seconds: float, max_checks: int, clients: int, seed: int, log: Callable[[str], None] = print
) -> Result:
    stats = Stats()
    faults: list[str] = []
    stop = threading.Event()

    def budget() -> bool:
        return stats.sent < max_checks

    with tempfile.TemporaryDirectory(prefix="authz-soak-") as tmp, JwksServer() as jwks:
        directory = Path(tmp) / "policies"
        directory.mkdir()
        policy_file = directory / "shop.yaml"
        seed_workload = Workload(jwks.issuer, random.Random(seed))
        jwks.rotate(seed_workload.key)
        texts = {
            p: policy_yaml(issuer=jwks.issuer, jwks_uri=jwks.jwks_uri, public=p)
            for p in ("public", "open")
        }
        write_atomically(policy_file, texts["public"])
        history = PolicyHistory(frozenset({"public"}))
        started = time.monotonic()
        with ServiceProcess(directory, extra_args=("--log-level", "error")) as service:
            threads = [
                threading.Thread(
                    target=client,
                    name=f"soak-client-{i}",
                    daemon=True,
                    args=(service, history, seed + i, seed_workload, stats, stop, budget),
                )
                for i in range(clients)
            ]
            for thread in threads:
                thread.start()

            def at(fraction: float) -> None:
                """Sleep until `fraction` of the run, or return early when the budget is spent."""
                target = started + seconds * fraction
                while time.monotonic() < target and budget():
                    time.sleep(0.02)

            current = "public"
            schedule: list[tuple[float, str]] = [
                (0.10, "jwks-outage"),
                (0.22, "jwks-garbage"),
                (0.32, "jwks-restored"),
                (0.35, "half-written-policy"),
                (0.55, "policy-rewrite"),
                (0.78, "policy-rewrite"),
            ]
            for fraction, fault in schedule:
                at(fraction)
                if not budget():
                    break
                faults.append(fault)
                if fault == "jwks-outage":
                    jwks.fail(503)
                elif fault == "jwks-garbage":
                    jwks.garbage(b"<html>gateway timeout</html>")
                elif fault == "jwks-restored":
                    jwks.rotate(seed_workload.key)
                elif fault == "half-written-policy":
                    other = "open" if current == "public" else "public"
                    text = texts[other]
                    # Cut inside a flow sequence: never valid YAML, so the last good set must stay.
                    policy_file.write_text(text[: text.index('"/' + other) + 3])
                elif fault == "policy-rewrite":
                    other = "open" if current == "public" else "public"
                    history.set(frozenset({current, other}))
                    write_atomically(policy_file, texts[other])
                    if not probe(service, other):
                        log(f"soak: the rewrite to /{other}/ never took effect")
                        stats.wrong_answer(f"policy rewrite to {other} not applied", on_error=False)
                    history.set(frozenset({other}))
                    current = other
            at(1.0)
            stop.set()
            for thread in threads:
                thread.join(30)
            peak = service.peak_rss_kib()
            exit_code = service.terminate()
        elapsed = time.monotonic() - started
    return Result(stats, peak, exit_code, faults, elapsed)


def report(result: Result, clients: int) -> str:
    s = result.stats
    refused = sum(s.refused.values())
    garbage_refused = sum(v for k, v in s.refused.items() if k.startswith(("garbage", "mutated")))
    lines = [
        (
            f"soak: {result.seconds:.1f} s, {clients} clients, faults: "
            f"{', '.join(result.faults) or 'none'}"
        ),
        f"checks sent:       {s.sent}",
        f"answered:          {s.answered}",
        (
            f"refused (grpc):    {refused} (garbage/mutated bytes: {garbage_refused}) "
            f"{dict(s.refused) if refused - garbage_refused else ''}"
        ),
        f"wrong answers:     {s.wrong}",
        f"allows on error:   {s.allows_on_error}",
        f"service peak RSS:  {result.peak_rss_kib / 1024:.1f} MiB",
        f"service exit code: {result.exit_code}",
        f"by kind:           {dict(sorted(s.by_kind.items()))}",
    ]
    lines += [f"  wrong: {e}" for e in s.examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-checks", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    result = run(args.seconds, args.max_checks, args.clients, args.seed)
    print(report(result, args.clients))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
