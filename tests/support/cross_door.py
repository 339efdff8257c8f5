"""Cross-door differential: one policy set, one list of requests, four enforcement points.

For one seed, tests/support/cross_door_cases.py makes a policy set and requests with
adversarial spellings; every request goes through:

  grpc    a real Envoy with ext_authz (gRPC) to `authz serve` (with `--ca-bundle`),
  http    a real Envoy running `authz envoy-config --http` to the same process's HTTP door
          (`--http-trust-xfcc`; the client certificate asked for, not required),
  export  a real Envoy with `authz export envoy --hybrid`'s filters (hosts whose files Envoy
          cannot enforce alone go to the same process over gRPC),
  nginx   a real nginx running deploy/nginx/ to `authz serve --http-mode forward-auth`
          (requests with a client certificate are not sent there: the shipped nginx config
          carries no workload identity).

Allowed = the echo upstream answered 200. Points that disagree on allow or deny fail it; deny
statuses may differ only as DOCUMENTED_STATUS_PAIRS says. Every request that reached the
upstream is also checked for a credential or a client-sent identity header that must not be
there. More seeds: `python -m tests.support.cross_door --seeds 0-49`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.envoy_bootstrap import REQUEST_HARDENING
from authz.export import export_envoy
from authz.identity.apikeys import key_hash
from authz.policy import load_policy_set
from tests.support import https
from tests.support.cross_door_cases import (
    API_KEY,
    SPOOFED,
    WRONG_KEY,
    Case,
    Removes,
    Scenario,
    make_scenario,
    worlds,
)
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.export_diff import World, authz_cluster
from tests.support.http_mode import HttpModeEnvoy, ServeProcess
from tests.support.nginx import Nginx
from tests.support.upstream import RecordedRequest

POINTS = ("grpc", "http", "export", "nginx")

# The differences the docs list (docs/http-mode.md, "Four points, one decision"), in one place:
# deny statuses that mean the same decision at two points. 400/403 and 401/403: Envoy's RBAC
# (the export) has no 400 and no challenge (docs/export.md); 400/401: nginx refuses a repeated
# Host or Authorization header, or a host with an empty label, itself. Any other pair of
# different deny statuses is reported.
DOCUMENTED_STATUS_PAIRS = frozenset(
    {frozenset({400, 403}), frozenset({401, 403}), frozenset({400, 401})}
)
# Denied at the HTTP door and forward-auth, allowed through gRPC and the export: an allow that
# would have to strip a query-string credential (403 query_token_not_removable,
# docs/http-mode.md). Keyed by the case property that makes it so.
QUERY_CREDENTIAL_POINTS = frozenset({"http", "nginx"})
# Refused by forward-auth alone (400 invalid_path), whatever the other points answer: a path with
# a segment that is `.` or `..` once its `;parameter` is cut (`/..;/admin`). Envoy's
# normalize_path folds such a segment before any of its doors (or the exported filters) sees the
# path, and forwards the folded path; nginx forwards it as sent, and the service refuses it, as
# the contract says (docs/http-mode.md, docs/policy.md).
DOT_SEGMENT_WITH_PARAMETER = re.compile(r"(?:^|/)(?:\.|%2e){1,2};", re.IGNORECASE)


@dataclass
class Finding:
    """A disagreement (allow vs deny, or an unlisted status) or a leak to the upstream."""

    case: Case
    statuses: dict[str, int]
    kind: str
    # Points whose deny came from the proxy itself, not the service (see Points.send).
    own: frozenset[str] = frozenset()

    def __str__(self) -> str:
        seen = ", ".join(
            f"{p} {s}{' (proxy)' if p in self.own else ''}" for p, s in self.statuses.items()
        )
        return f"{self.kind}: {self.case.describe()}: {seen}"


@dataclass(frozen=True)
class Known:
    """A disagreement found, reported to the branch that owns it and not fixed yet. The test
    and the command list the findings it matches as quarantined, by name, instead of failing:
    each is a bug to fix, not a difference the docs list."""

    name: str
    why: str
    matches: Callable[[Finding], bool]


# None active. Fixed, with tests that pin them: from issue 22's runs, a host with two trailing
# dots, two-SAN peers, folded paths, repeated token headers, a client's identity header through
# the export; then `:path` read raw behind forward-auth (tests/unit/request/test_readings.py,
# tests/e2e/test_forward_auth_nginx.py) and a token in the header and the query string
# (tests/unit/identity/test_jwt.py, tests/e2e/test_export_readings.py).
KNOWN: dict[str, Known] = {}
QUARANTINE: tuple[Known, ...] = tuple(KNOWN.values())


def quarantined(finding: Finding) -> Known | None:
    return next((known for known in QUARANTINE if known.matches(finding)), None)


def _optional_client_certificate(config: Any) -> None:
    """The generated HTTP-mode bootstrap requires a client certificate; the differential also
    sends requests without one (as to the other Envoys), so it asks for one without requiring."""
    if isinstance(config, dict):
        if "require_client_certificate" in config:
            config["require_client_certificate"] = False
        for value in config.values():
            _optional_client_certificate(value)
    elif isinstance(config, list):
        for value in config:
            _optional_client_certificate(value)


class _HttpDoorEnvoy(HttpModeEnvoy):
    def bootstrap(self) -> dict[str, Any]:
        config = super().bootstrap()
        _optional_client_certificate(config)
        return config


@dataclass
class Points:
    """The four running points and how to send a case to each."""

    world: World
    urls: dict[str, str]

    def send(self, point: str, case: Case, token: str | None, case_id: str) -> tuple[int, str]:
        """The status, and who answered a deny: `service` (its JSON body with a decision id),
        else the proxy itself (`own`: Envoy's RBAC, nginx refusing a request it cannot parse);
        -1: no answer."""
        tls = point != "nginx"
        cert = self.world.certs[case.cert] if tls and case.cert is not None else None
        try:
            answer = https.request(
                self.urls[point],
                case.target(token),
                method=case.method,
                headers=case.headers(token, case_id),
                ca=self.world.pki.ca if tls else None,
                client_cert=cert,
            )
        except (ConnectionError, OSError):
            return -1, "none"
        if answer.status == 200:
            return 200, ""
        return answer.status, "service" if b'"decision_id"' in answer.body else "own"


def _start_points(stack: ExitStack, world: World, policies: Path, workdir: Path) -> Points:
    exported = export_envoy(load_policy_set(str(policies)), hybrid=True)
    tls = TlsConfig(
        cert=world.pki.server.cert,
        key=world.pki.server.key,
        client_ca=world.pki.ca,
        require_client_certificate=False,
    )
    upstream = world.upstream
    # One process serves the gRPC door (grpc, export) and the HTTP door (http); forward-auth is
    # another mode, so another process.
    doors = ServeProcess(policies, "--http-trust-xfcc", "--ca-bundle", str(world.pki.ca))
    forward = ServeProcess(policies, "--no-grpc", "--http-mode", "forward-auth")
    with ThreadPoolExecutor(2) as pool:
        for started in pool.map(lambda s: stack.enter_context(s), (doors, forward)):
            assert started is not None
    common: dict[str, Any] = {
        "upstream_port": upstream.port,
        "tls": tls,
        "hcm_overrides": dict(REQUEST_HARDENING),
    }
    envoys: dict[str, Envoy] = {
        "grpc": Envoy(EnvoyConfig(authz_address=doors.grpc_address(), **common), workdir / "grpc"),
        "http": _HttpDoorEnvoy(doors, upstream, workdir / "http", tls=tls),
        "export": Envoy(
            EnvoyConfig(
                authz_address=doors.grpc_address(),
                http_filters=exported.filter_dicts(),
                extra_clusters=[*exported.clusters, authz_cluster(doors.grpc_address())],
                **common,
            ),
            workdir / "export",
        ),
    }
    app = f"{upstream.host}:{upstream.port}"
    nginx = Nginx(workdir / "nginx", authz=forward.http_address(), upstream=app)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: stack.enter_context(p), [*envoys.values(), nginx]))
    urls = {name: envoy.url for name, envoy in envoys.items()}
    urls["nginx"] = nginx.url
    return Points(world, urls)


def judge(case: Case, statuses: dict[str, int]) -> str | None:
    """Why these statuses are a disagreement, or None when they agree (up to DOCUMENTED)."""
    allowed = {p for p, s in statuses.items() if s == 200}
    if allowed and len(allowed) < len(statuses):
        denied = set(statuses) - allowed
        if case.query_credential and denied <= QUERY_CREDENTIAL_POINTS:
            return None
        dot_parameter = DOT_SEGMENT_WITH_PARAMETER.search(case.path.split("?", 1)[0])
        if dot_parameter and denied == {"nginx"} and statuses["nginx"] == 400:
            return None
        return "allow/deny"
    denies = {s for s in statuses.values() if s != 200}
    for a in denies:
        for b in denies:
            if a < b and frozenset({a, b}) not in DOCUMENTED_STATUS_PAIRS:
                return "status"
    return None


def leaks(removes: Removes, token: str | None, seen: Sequence[RecordedRequest]) -> list[str]:
    """What reached the upstream that must not have: an API key the host's provider reads (in
    any spelling: a header, a cookie, the query string), a client-sent identity header, or a
    token where the host's providers read it (they are all `forward: false`)."""
    found = []
    for request in seen:
        read = "".join(v for k, v in request.headers if k in removes.token_headers)
        if token and (token in read or (removes.token_query and token in request.path)):
            found.append("a forward: false token reached the upstream")
        text = request.path + "".join(f"\n{k}: {v}" for k, v in request.headers)
        if removes.api_key and (API_KEY in text or WRONG_KEY in text):
            found.append("an API key reached the upstream")
        if SPOOFED in (request.header("x-authz-principal") or ""):
            found.append("a client-sent x-authz-principal reached the upstream")
        if removes.user_id and SPOOFED in (request.header("x-user-id") or ""):
            found.append("a client-sent x-user-id reached the upstream")
    return found


def run_seed(world: World, seed: int, workdir: Path) -> tuple[Scenario, list[Finding]]:
    scenario = make_scenario(seed, world)
    policies = workdir / f"cross-{seed}"
    policies.mkdir(parents=True)
    for name, doc in scenario.files.items():
        (policies / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (policies / "partners.keys.yaml").write_text(
        f"keys: [{{id: acme-1, sha256: {key_hash(API_KEY)}, labels: {{tier: gold}}}}]\n"
    )
    policy_set = load_policy_set(str(policies))
    now = time.time()
    findings: list[Finding] = []
    with ExitStack() as stack:
        points = _start_points(stack, world, policies, workdir / f"run-{seed}")

        def each(numbered: tuple[int, Case]) -> list[Finding]:
            number, case = numbered
            token = world.keys.token(case.token, now)
            at = [p for p in POINTS if not (p == "nginx" and case.cert is not None)]
            answers = {p: points.send(p, case, token, f"{seed}-{number}-{p}") for p in at}
            statuses = {p: status for p, (status, _) in answers.items()}
            own = frozenset(p for p, (_, who) in answers.items() if who == "own")
            scenario.statuses[tuple(statuses.get(p, 0) for p in POINTS)] += 1
            out = []
            why = judge(case, statuses)
            if why:
                out.append(Finding(case, statuses, why, own))
            removes = Removes.for_case(policy_set, case)
            for point in at:
                mark = f"{seed}-{number}-{point}"
                seen = [r for r in world.upstream.requests if r.header("x-diff-id") == mark]
                out += [
                    Finding(case, statuses, f"{point}: {leak}", own)
                    for leak in leaks(removes, token, seen)
                ]
            return out

        with ThreadPoolExecutor(4) as pool:
            for found in pool.map(each, enumerate(scenario.cases)):
                findings += found
        world.upstream.clear()
    return scenario, findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0-9", help="N or A-B (inclusive)")
    parser.add_argument("--quiet", action="store_true", help="no policy sets for failed seeds")
    args = parser.parse_args(argv)
    first, _, last = args.seeds.partition("-")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds(Path(tmp)):
            for seed in range(int(first), int(last or first) + 1):
                scenario, found = run_seed(world, seed, Path(tmp))
                allowed = sum(n for key, n in scenario.statuses.items() if 200 in key)
                print(
                    f"seed {seed}: {len(scenario.cases)} requests, {allowed} allowed somewhere,"
                    f" {len(found)} findings",
                    flush=True,
                )
                for finding in found:
                    known = quarantined(finding)
                    print(f"  {finding}" + (f" [quarantined: {known.name}]" if known else ""))
                if any(quarantined(f) is None for f in found):
                    failed += 1
                    if not args.quiet:
                        print(json.dumps(scenario.files, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
