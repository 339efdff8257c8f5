"""An opaque token's introspection cache hit vs a warm JWT (a verified-token cache hit): seconds
per `Engine.check` of the realistic request (1,000 rules), decision cache off for both (a host
with introspection providers never uses it: an answer may be revoked), alternating rounds.

The endpoint is a small RFC 7662 server on 127.0.0.1 (plain http is accepted on loopback); it
answers once, to fill the cache, and the timed checks never reach it."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from authz.config import Settings
from authz.engine import Engine
from authz.identity import KeyRegistry
from authz.identity.introspection import Introspector
from authz.identity.sources import ServiceResolver
from authz.policy import PolicyStore, load_policy_set
from authz.wire.inbound import to_request
from bench import fixtures
from bench.timing import Result, alternate

OPAQUE = "bench-opaque-token-0123456789abcdef"


@contextmanager
def _endpoint() -> Iterator[tuple[str, list[int]]]:
    served = [0]
    members = {
        "active": True,
        "sub": "alice",
        "iss": fixtures.ISSUER,
        "aud": fixtures.AUDIENCE,
        "scope": "orders.read cart",
        "exp": 4_000_000_000,
    }
    answer = json.dumps(members).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            served[0] += 1
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/introspect", served
    finally:
        server.shutdown()
        server.server_close()


def cache_hit_vs_warm_jwt(*, calls: int, rounds: int) -> dict[str, Result]:
    key = fixtures.make_key("RS256")
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp, _endpoint() as (url, served):
        directory = fixtures.write_policies(Path(tmp) / "p", 1000, [key])
        policy = json.loads((directory / "bench.yaml").read_text())
        (directory / "secret.txt").write_text("bench-secret\n")
        policy["authentication"]["introspection"] = [
            {"name": "bench", "endpoint": url, "issuer": fixtures.ISSUER, "client_id": "bench",
             "client_secret_file": "secret.txt", "from": [{"header": "x-opaque-token"}]}
        ]  # fmt: skip
        (directory / "bench.yaml").write_text(json.dumps(policy))
        policy_set = load_policy_set(str(directory))
        registry = KeyRegistry()
        registry.ensure(policy_set.jwt_providers)
        introspector = Introspector()
        try:
            if not registry.wait_ready(10):
                raise RuntimeError("the bench JWKS file did not load")
            resolver = ServiceResolver(Settings(), registry, introspection=introspector)
            engine = Engine(PolicyStore(policy_set), resolver, decision_cache=False)
            limits = Settings().limits
            # The mTLS principal is not the point here: only the token decides.
            jwt_request = to_request(fixtures.check_request(key.token(), principal=""), limits)
            base = to_request(fixtures.check_request(None, principal=""), limits)
            opaque_request = replace(base, headers={**base.headers, "x-opaque-token": OPAQUE})
            for request in (jwt_request, opaque_request):
                verdict = engine.check(request)
                assert verdict.decision.allowed, verdict.decision
                assert verdict.request_principal == f"{fixtures.ISSUER}/alice"

            def repeat(request: Any) -> Any:
                def run(n: int) -> None:
                    for _ in range(n):
                        engine.check(request)

                return run

            results = alternate(
                {
                    "warm JWT (RS256, verified-token cache)": repeat(jwt_request),
                    "opaque token, introspection cache hit": repeat(opaque_request),
                },
                calls=calls,
                rounds=rounds,
            )
            assert served[0] == 1, served  # every timed check was a cache hit
            return results
        finally:
            introspector.close()
            registry.close()
