"""The exported policy (authz export envoy) through a real Envoy, against its two alternatives.

Layouts, each Envoy --concurrency 1 with the same HCM hardening and a direct-response route, all
judging the realistic request (RS256 bearer token, GET /api/orders/42) under the same 1,000-rule
set (bench/fixtures.py):

* `envoy + export`            the filters `authz export envoy` prints for the set;
* `envoy + jwt_authn + rbac`  what an operator would write by hand: one jwt_authn provider
                              (token optional, verified when present) and two RBAC filters whose
                              rules say what the set says (namespaces as SAN regexes, the JWT
                              rule as the verified issuer in jwt_authn's metadata);
* `envoy + authz w1`          ext_authz (gRPC) to `authz serve --workers 1`.

Also timed: exporting the 1,000-rule set (load excluded), and the Envoy load of its config is
the `envoy + export` layout starting at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authz.envoy_bootstrap import REQUEST_HARDENING
from bench import envoy_load, fixtures
from bench.procs import free_port

JWT = "envoy.filters.http.jwt_authn"


def exportable_policies(tmp: Path, key: fixtures.Key) -> Path:
    """The bench set, without `algorithms` (exported as one more RBAC check on the token's
    header, which the hand-written filters do not make); the keys are RS256 either way."""
    directory = fixtures.write_policies(tmp / "policies", 1000, [key])
    path = directory / "bench.yaml"
    doc = json.loads(path.read_text())
    for provider in doc["authentication"]["jwt"]:
        provider.pop("algorithms", None)
    path.write_text(json.dumps(doc))
    return directory


def _hand_written(jwks: str) -> list[dict[str, Any]]:
    rules = fixtures.generated_rules(1000)

    def permission(rule: dict[str, Any]) -> dict[str, Any]:
        to = rule["to"][0]
        methods = [
            {"header": {"name": ":method", "string_match": {"exact": m}}} for m in to["methods"]
        ]
        paths = []
        for p in to["paths"]:
            if "{" in p:
                regex = p.replace("{**}", ".*").replace("{*}", "[^/]+")
                paths.append({"url_path": {"path": {"safe_regex": {"regex": regex}}}})
            else:
                paths.append({"url_path": {"path": {"exact": p}}})
        return {
            "and_rules": {
                "rules": [{"or_rules": {"rules": methods}}, {"or_rules": {"rules": paths}}]
            }
        }

    def principal(rule: dict[str, Any]) -> dict[str, Any]:
        ids = []
        for entry in rule["from"]:
            for ns in entry.get("namespaces", ()):
                regex = f"spiffe://cluster\\.local/ns/{ns}/sa/[^/]+"
                ids.append({"authenticated": {"principal_name": {"safe_regex": {"regex": regex}}}})
            for p in entry.get("principals", ()):
                ids.append({"authenticated": {"principal_name": {"exact": p}}})
            for iss in entry.get("issuers", ()):
                ids.append(
                    {
                        "sourced_metadata": {
                            "metadata_matcher": {
                                "filter": JWT,
                                "path": [{"key": "payload"}, {"key": "iss"}],
                                "value": {"string_match": {"exact": iss}},
                            }
                        }
                    }
                )
        return {"or_ids": {"ids": ids}} if len(ids) > 1 else ids[0]

    jwt_authn = {
        "name": JWT,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",  # noqa: E501
            "providers": {
                "bench": {
                    "issuer": fixtures.ISSUER,
                    "audiences": [fixtures.AUDIENCE],
                    "local_jwks": {"inline_string": jwks},
                    "payload_in_metadata": "payload",
                }
            },
            "rules": [
                {
                    "match": {"prefix": "/"},
                    "requires": {
                        "requires_any": {
                            "requirements": [{"provider_name": "bench"}, {"allow_missing": {}}]
                        }
                    },
                }
            ],
        },
    }
    return [jwt_authn, *envoy_load.rbac_pair(rules, permission, principal)]


def bootstrap_with(listener: int, admin: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    config = envoy_load.bootstrap(listener, admin, "alone", [])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = hcm["typed_config"]
    typed.update(REQUEST_HARDENING)
    typed["http_filters"] = [*filters, *typed["http_filters"]]
    return config


@contextlib.contextmanager
def envoy_of(tmp: Path, name: str, config_of: Any, *, cores: str | None = None) -> Iterator[int]:
    """Envoy on `config_of(listener, admin)`; yields its listener port."""
    listener, admin = free_port(), free_port()
    config = config_of(listener, admin)
    with envoy_load.run_envoy(tmp, name, config, listener, admin, cores=cores) as port:
        yield port


def exported_filters(policies: Path) -> list[dict[str, Any]]:
    """The Envoy filters `authz export envoy` makes of the set; raises if any host stays out."""
    from authz.export import export_envoy
    from authz.policy import load_policy_set

    # The bench's certificates carry one URI SAN each: the mesh issues SVIDs alone.
    exported = export_envoy(load_policy_set(str(policies)), svid_only=True)
    problems = [str(f) for f in exported.findings if f.decides]
    if problems:
        raise RuntimeError(f"the bench set is not exportable: {problems}")
    return list(exported.filter_dicts())


def command_seconds(policies: Path, runs: int = 3) -> float:
    """Median wall time of the command a user runs (`authz export envoy DIR --format json`):
    interpreter start, imports, loading the set, the export and the output."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "authz", "export", "envoy", str(policies), "--svid-only",
             "--format", "json"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(*, rounds: int, seconds: float) -> dict[str, Any]:
    from authz.export import export_envoy
    from authz.policy import load_policy_set

    key = fixtures.make_key("RS256")
    token = key.token(lifetime=6 * 3600)
    message = fixtures.check_request(token)
    with (
        tempfile.TemporaryDirectory(prefix="authz-bench-export-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        policies = exportable_policies(tmp, key)
        policy_set = load_policy_set(str(policies))
        export_seconds = []
        for _ in range(3):
            started_at = time.perf_counter()
            export_envoy(policy_set, svid_only=True).filter_dicts()
            export_seconds.append(time.perf_counter() - started_at)
        cli_seconds = command_seconds(policies)
        filters = exported_filters(policies)
        jwks = (policies / "jwks.json").read_text()
        listeners = {
            "envoy + export": stack.enter_context(
                envoy_of(tmp, "export", lambda lp, ap: bootstrap_with(lp, ap, filters))
            ),
            "envoy + jwt_authn + rbac": stack.enter_context(
                envoy_of(tmp, "hand", lambda lp, ap: bootstrap_with(lp, ap, _hand_written(jwks)))
            ),
        }
        ports = stack.enter_context(envoy_load.authz(tmp, policies, 1, message))
        listeners["envoy + authz w1"] = stack.enter_context(envoy_load.envoy(tmp, "authz", ports))
        names = list(listeners)
        for n in names:  # warm-up, and proof every layout answers 200 (wrk raises otherwise)
            envoy_load.wrk(listeners[n], token, seconds=1)
        throughput: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                throughput[n].append(envoy_load.wrk(listeners[n], token, seconds=seconds))
    median = {n: statistics.median(v) for n, v in throughput.items()}
    return {
        "throughput": throughput,
        "median": median,
        "export_seconds": min(export_seconds),
        "export_cli_seconds": cli_seconds,
        "vs_hand_written": median["envoy + export"] / median["envoy + jwt_authn + rbac"],
        "vs_authz_w1": median["envoy + export"] / median["envoy + authz w1"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export-load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(compare(rounds=args.rounds, seconds=args.seconds), indent=1))
    return 0
