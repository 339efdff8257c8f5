"""Differential proof that `authz export envoy` enforces what the service decides.

For one seed: generate a policy set over the exportable subset and a list of requests, then
send every request through two real Envoys on loopback, both with the same HTTP connection
manager hardening (authz/envoy_bootstrap.py REQUEST_HARDENING) and downstream mTLS:

(A) ext_authz to this service (a real `authz serve` process on the generated set);
(B) the exported filters (jwt_authn + RBAC), no ext_authz.

Allowed = the echo upstream answered 200. Every request must get the same allow/deny from
both. Run more seeds with `python -m tests.support.export_diff --seeds 0-99`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.envoy_bootstrap import AUTHZ_CLUSTER, REQUEST_HARDENING
from authz.export import export_envoy
from authz.policy import load_policy_set
from tests.support import https
from tests.support.certs import CertPaths, Pki, make_pki
from tests.support.envoy import Envoy, EnvoyConfig, TlsConfig
from tests.support.jwks_server import JwksServer
from tests.support.service import ServiceProcess
from tests.support.tokens import SigningKey, claims, jwks_json, make_key, tamper
from tests.support.upstream import EchoUpstream

ISSUER = "https://id.diff.example"
REQUESTS = 150
AUDIENCE = "diff-api"
SPIFFE_IDS = (
    "spiffe://cluster.local/ns/shop/sa/frontend",
    "spiffe://cluster.local/ns/ops/sa/admin",
    "spiffe://cluster.local/ns/team-a/sa/worker",
    "spiffe://other.local/ns/shop/sa/frontend",
)
HOSTS = ("shop.example.com", "a.svc.local", "b.a.svc.local", "other.example")
REQUEST_HOSTS = (
    "shop.example.com",
    "SHOP.example.com",
    "shop.example.com:8443",
    "shop.example.com.",
    # Still ending in `.` after Envoy's strip: 400 invalid_host at the service and the export
    # (docs/policy.md, "One rule for ambiguous requests").
    "shop.example.com..",
    "SHOP.example.com..:8443",
    "a.svc.local",
    "x.b.a.svc.local",
    "other.example",
    "unknown.example",
)
ODD_HOSTS = ("bad_host!", "[::1]", ".svc.local", "a..svc.local")
PATH_PATTERNS = (
    "/api/orders",
    "/api/orders/{*}",
    "/api/{**}",
    "/api/orders/{*}/items",
    "/api/{section}/{id}",
    "/admin",
    "/admin/{**}",
    "/admin*",
    "*.json",
    "/public/*",
    "*",
    "/",
)
REQUEST_PATHS = (
    "/",
    "/api/orders",
    "/api/orders/42",
    "/api/orders/42/items",
    "/api/orders/",
    "/api/",
    "/api",
    "/admin",
    "/admin/",
    "/admin/users",
    "/admin;jsessionid=1",
    "/admin;x/users",
    "/adminx",
    "/public/a.json",
    "/public/x/y",
    "//api/orders",
    "/api/./orders",
    "/api/x/../orders/7",
    "/api/%6Frders",
    "/%61dmin",
    "/..;/admin",
    "/api/orders?x=1",
    "/api/orders/42?debug=%2F",
    "/api%2Forders",
    "/a%zz",
    "/api/orders/a;b",
    "/x/y.json",
    "/x/y.json;v=1",
    "//",
    "///%2E/",
    "//;x",
    "/secret/data;.json",
    "/admin;jsessionid=1/",
)
METHODS = ("GET", "GET", "POST", "DELETE")
NAMESPACES = ("shop", "ops", "team-*", "*-a", "*")
PRINCIPALS = (
    "spiffe://cluster.local/ns/shop/sa/frontend",
    "cluster.local/ns/ops/sa/admin",
    "cluster.local/ns/shop/*",
    "spiffe://cluster.local/*",
    "*/sa/worker",
    "*",
    "other.local/ns/shop/sa/frontend",
)
REQUEST_PRINCIPALS = (f"{ISSUER}/alice", f"{ISSUER}/*", "*", "*/bob", "https://id.diff.*")
TOKENS = ("none", "none", "alice", "alice", "bob", "carol", "carol")
# How the token is written in its header: `{}` is the token; a list sends the header twice.
SPELLINGS: tuple[tuple[str, ...], ...] = (
    ("{p}{t}",),
    ("{p}{t}",),
    ("{p}{t}",),
    ("bearer {t}",),
    ("BEARER {t}",),
    ("{p} {t}",),
    ("Basic dXNlcg==, {p}{t}",),
    ("x{p}{t}",),
    ("{p}{t}", "{p}{t}"),
    ("{p}{t}", "{p}{other}"),
    ("{p}{t} junk",),
    ("Basic dXNlcg==",),
)
# x-tenant as sent: None (absent), one value, or the header twice.
TENANTS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("acme",),
    ("other",),
    ("acmex",),
    ("acme", "acme"),
    ("acme", "other"),
    ("acme, other",),
)
BAD_TOKENS = ("expired", "tampered", "no_sub", "wrong_aud", "no_kid")


@dataclass
class Case:
    method: str
    path: str
    host: str
    cert: int | None  # index into SPIFFE_IDS, None: no client certificate
    token: str
    tenant: tuple[str, ...] | None
    spelling: tuple[str, ...] = SPELLINGS[0]

    def describe(self) -> str:
        who = SPIFFE_IDS[self.cert] if self.cert is not None else "no cert"
        extra = f"token {self.token} as {self.spelling}; x-tenant {self.tenant}"
        return f"{self.method} {self.host}{self.path} [{who}; {extra}]"


@dataclass
class Scenario:
    seed: int
    files: dict[str, Any]
    cases: list[Case] = field(default_factory=list)
    statuses: Counter[tuple[int, int]] = field(default_factory=Counter)  # (service, export)
    # --hybrid: how many checks the exporting Envoy sent to the service (0 when all native).
    hybrid_checks: int = 0
    # Where the generated providers look for tokens: (header, prefix).
    token_header: tuple[str, str] = ("authorization", "Bearer ")


def _pick(rng: random.Random, pool: Sequence[Any], most: int = 2) -> list[Any]:
    return rng.sample(list(pool), rng.randint(1, min(most, len(pool))))


def _from_entry(rng: random.Random) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    while not entry:
        for name, pool in (
            ("principals", PRINCIPALS),
            ("namespaces", NAMESPACES),
            ("request_principals", REQUEST_PRINCIPALS),
            ("issuers", (ISSUER,)),
            ("ip_blocks", ("127.0.0.0/8", "10.0.0.0/8", "::1")),
        ):
            if rng.random() < 0.15:
                key = name if rng.random() < 0.7 else f"not_{name}"
                entry[key] = _pick(rng, pool)
        if rng.random() < 0.08:
            entry["authenticated" if rng.random() < 0.6 else "not_authenticated"] = True
    return entry


def _to_entry(rng: random.Random, roles: Sequence[str], in_role: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    while not entry:
        if rng.random() < 0.25:
            entry["methods" if rng.random() < 0.8 else "not_methods"] = _pick(
                rng, ("GET", "POST", "DELETE", "*")
            )
        if rng.random() < 0.7:
            entry["paths" if rng.random() < 0.8 else "not_paths"] = _pick(rng, PATH_PATTERNS)
        if rng.random() < 0.1:
            entry["hosts" if rng.random() < 0.7 else "not_hosts"] = _pick(
                rng, ("shop.example.com", "*.svc.local", "*.a.svc.local")
            )
        if roles and not in_role and rng.random() < 0.2:
            entry["role" if rng.random() < 0.8 else "not_role"] = rng.choice(roles)
    return entry


def _condition(rng: random.Random, action: str) -> dict[str, Any]:
    options: list[dict[str, Any]] = [
        {"claim": "scope", "contains": rng.choice(["orders.read", "cart"])},
        {"claim": "tier", "equals": rng.choice(["gold", "free"])},
        {"claim": "roles", "any_of": _pick(rng, ["admin", "support", "user"])},
        {"claim": "org.id", "equals": rng.choice([7, "7"])},
        {"claim": "tier", "present": rng.choice([True, False])},
        {"claim": "roles", "contains": "admin"},
        {"header": "x-tenant", "equals": "acme"},
        {"header": "x-tenant", "prefix": "ac"},
        {"header": "x-tenant", "any_of": ["acme", "other"]},
        {"header": "x-tenant", "present": rng.choice([True, False])},
    ]
    cond = rng.choice(options)
    op = next(k for k in cond if k not in ("claim", "header"))
    if op == "present":
        return cond
    # Envoy's RBAC can say "some element of the header" and its negation only: an allow rule's
    # header condition is exportable in its `not_` form, a deny rule's as written.
    negated = action == "allow" if "header" in cond else rng.random() < 0.25
    if negated:
        cond[f"not_{op}"] = cond.pop(op)
    return cond


def generate(seed: int, jwks_file: str, hybrid: bool = False, jwks_uri: str = "") -> Scenario:
    """A random policy set over the exportable subset, and random requests for it. `hybrid`:
    some files also hold what Envoy cannot enforce (a pseudo-header or a query condition),
    which `--hybrid` keeps in ext_authz."""
    rng = random.Random(seed)
    files: dict[str, Any] = {}
    # Now and then the providers read a prefix-less header, sent twice by some requests.
    token_header = ("x-jwt", "") if rng.random() < 0.25 else ("authorization", "Bearer ")
    # Half the seeds fetch the keys over HTTPS (jwks_uri: Envoy's remote_jwks), when given.
    source = {"jwks_uri": jwks_uri} if jwks_uri and rng.random() < 0.5 else {"jwks_file": jwks_file}
    # Now and then the provider lists its algorithms: bob's tokens are ES256, the others RS256.
    algorithms = rng.choice([None, None, ["ES256"], ["RS256", "PS256"]])
    role_names = ["readers", "writers"][: rng.randint(0, 2)]
    n_files = rng.randint(1, 3)
    rule_no = 0
    for i in range(n_files):
        doc: dict[str, Any] = {}
        if i > 0 or rng.random() < 0.3:
            doc["hosts"] = _pick(rng, ("shop.example.com", "*.svc.local", "*.a.svc.local"))
        auth: dict[str, Any] = {}
        if rng.random() < 0.5:
            auth["mtls"] = {"trust_domains": _pick(rng, ("cluster.local", "other.local"))}
            if len(auth["mtls"]["trust_domains"]) == 1 and rng.random() < 0.4:
                # Istio's trustDomainAliases: the principals expand over both trust domains.
                alias = next(
                    td for td in ("cluster.local", "other.local")
                    if td not in auth["mtls"]["trust_domains"]
                )  # fmt: skip
                auth["mtls"]["trust_domain_aliases"] = [alias]
        if rng.random() < 0.7:
            auth["jwt"] = [{"issuer": ISSUER, "audiences": [AUDIENCE], **source}]
            if token_header[0] != "authorization":
                auth["jwt"][0]["from"] = [{"header": token_header[0]}]
            if algorithms:
                auth["jwt"][0]["algorithms"] = algorithms
        if auth:
            doc["authentication"] = auth
        if i == 0 and role_names:
            doc["roles"] = {r: [_to_entry(rng, [], True) for _ in range(2)] for r in role_names}
        rules = []
        for _ in range(rng.randint(2, 7)):
            rule_no += 1
            action = rng.choices(["allow", "deny", "audit"], [6, 3, 1])[0]
            rule: dict[str, Any] = {"name": f"r{rule_no}", "action": action}
            if action != "audit" and rng.random() < 0.15:
                rule["dry_run"] = True
            # One or two of from/to/when per rule, so that each decides often.
            parts = rng.sample(["from", "to", "to", "when", "when"], rng.randint(1, 2))
            if "from" in parts:
                rule["from"] = [_from_entry(rng) for _ in range(rng.randint(1, 2))]
            if "to" in parts:
                rule["to"] = [_to_entry(rng, role_names) for _ in range(rng.randint(1, 2))]
            if "when" in parts:
                rule["when"] = [_condition(rng, action)]
            if hybrid and "hosts" in doc and rng.random() < 0.25:
                rule.setdefault("when", []).append(
                    rng.choice(
                        [
                            {"header": ":method", "any_of": ["GET", "POST"]},
                            {"query": "x", "present": False},
                        ]
                    )
                )
            rules.append(rule)
        doc["rules"] = rules
        files[f"f{i}.yaml"] = doc
    scenario = Scenario(seed, files, token_header=token_header)
    for _ in range(REQUESTS):
        odd = rng.random() < 0.1  # now and then, input the service refuses before any rule
        scenario.cases.append(
            Case(
                method=rng.choice(("get", "Post"))
                if odd and rng.random() < 0.3
                else rng.choice(METHODS),
                path=rng.choice(REQUEST_PATHS),
                host=rng.choice(ODD_HOSTS if odd else REQUEST_HOSTS),
                cert=rng.choice([None, 0, 0, 1, 2, 3]),
                token=rng.choice(BAD_TOKENS if rng.random() < 0.12 else TOKENS),
                tenant=rng.choice(TENANTS),
                spelling=rng.choice(SPELLINGS),
            )
        )
    return scenario


@dataclass
class Keys:
    one: SigningKey
    two: SigningKey

    def token(self, kind: str, now: float) -> str | None:
        base = dict(
            audience=AUDIENCE, scope="orders.read cart", tier="gold", roles=["admin"], org={"id": 7}
        )
        if kind == "none":
            return None
        if kind == "alice":
            return self.one.sign(claims(ISSUER, now=now, **base))
        if kind == "bob":
            return self.two.sign(
                claims(ISSUER, now=now, subject="bob", audience=AUDIENCE, scope="cart", roles=[])
            )
        if kind == "carol":
            return self.one.sign(
                claims(ISSUER, now=now, subject="carol", audience=AUDIENCE, tier="free",
                       roles=["support", "user"], org={"id": "7"}, scope="profile")
            )  # fmt: skip
        if kind == "expired":
            return self.one.sign(claims(ISSUER, now=now - 3600, **base))
        if kind == "tampered":
            return tamper(self.one.sign(claims(ISSUER, now=now, **base)))
        if kind == "no_sub":
            return self.one.sign(claims(ISSUER, now=now, subject=None, **base))
        if kind == "wrong_aud":
            return self.one.sign(claims(ISSUER, now=now, audience="other"))
        if kind == "no_kid":
            return self.one.sign(claims(ISSUER, now=now, **base), kid=None)
        raise ValueError(kind)


@dataclass
class World:
    """What every seed shares: certificates, keys, the upstream, the JWKS (a file, and the same
    keys served over HTTPS on loopback for `jwks_uri` providers)."""

    pki: Pki
    certs: list[CertPaths]
    keys: Keys
    jwks_path: Path
    upstream: EchoUpstream
    jwks_server: JwksServer


@dataclass
class Disagreement:
    case: Case
    via_service: int
    via_export: int

    def __str__(self) -> str:
        return f"{self.case.describe()}: service {self.via_service}, export {self.via_export}"


def _send(
    envoy: Envoy,
    world: World,
    case: Case,
    token: tuple[str, str] | None,
    token_header: tuple[str, str],
) -> int:
    headers: list[tuple[str, str]] = [("host", case.host)]
    if token is not None:
        name, prefix = token_header
        for spelling in case.spelling:
            if not prefix:  # a prefix-less header: the spelling's repeats only
                spelling = "{t}"
            value = spelling.format(p=prefix, t=token[0], other=token[1])
            headers.append((name, value))
    for value in case.tenant or ():
        headers.append(("x-tenant", value))
    try:
        return https.request(
            envoy.url,
            case.path,
            method=case.method,
            headers=headers,
            ca=world.pki.ca,
            client_cert=world.certs[case.cert] if case.cert is not None else None,
        ).status
    except ConnectionError:
        return -1


def run_seed(
    world: World, seed: int, workdir: Path, hybrid: bool = False
) -> tuple[Scenario, list[Disagreement]]:
    scenario = generate(seed, str(world.jwks_path), hybrid, world.jwks_server.jwks_uri)
    policies = workdir / f"seed-{seed}{'-hybrid' if hybrid else ''}"
    policies.mkdir(parents=True)
    for name, doc in scenario.files.items():
        (policies / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    # Every test certificate has one URI SAN: the operator's `--svid-only` holds.
    exported = export_envoy(
        load_policy_set(str(policies)), hybrid=hybrid, svid_only=True, ca_file=str(world.pki.ca)
    )
    problems = [str(f) for f in exported.findings if f.decides]
    if problems:
        raise AssertionError(f"seed {seed}: generated set not exportable: {problems}")
    tls = TlsConfig(
        cert=world.pki.server.cert,
        key=world.pki.server.key,
        client_ca=world.pki.ca,
        require_client_certificate=False,
    )
    common: dict[str, Any] = {
        "upstream_port": world.upstream.port,
        "tls": tls,
        "hcm_overrides": dict(REQUEST_HARDENING),
    }
    now = time.time()
    with ExitStack() as stack:
        # The service trusts the test CA for the JWKS server, as Envoy does (ca_file above).
        env = {"SSL_CERT_FILE": str(world.pki.ca)}
        service = stack.enter_context(ServiceProcess(policies, extra_env=env))
        via_service = stack.enter_context(
            Envoy(EnvoyConfig(authz_address=service.address, **common), workdir / f"a-{seed}")
        )
        via_export = stack.enter_context(
            Envoy(
                EnvoyConfig(
                    authz_address=service.address,
                    http_filters=exported.filter_dicts(),
                    extra_clusters=[
                        *exported.clusters,
                        *([authz_cluster(service.address)] if hybrid else []),
                    ],
                    **common,
                ),
                workdir / f"b-{seed}",
            )
        )

        for c in exported.clusters:  # Envoy fetches a remote JWKS after it starts listening
            _wait_fetched(via_export, c["name"])

        def both(case: Case) -> Disagreement | None:
            token = world.keys.token(case.token, now)
            pair = None if token is None else (token, world.keys.token("bob", now) or "")
            a = _send(via_service, world, case, pair, scenario.token_header)
            b = _send(via_export, world, case, pair, scenario.token_header)
            scenario.statuses[(a, b)] += 1
            if (a == 200) != (b == 200):
                return Disagreement(case, a, b)
            return None

        with ThreadPoolExecutor(4) as pool:
            found = [d for d in pool.map(both, scenario.cases) if d is not None]
        if hybrid:
            scenario.hybrid_checks = sum(
                via_export.stats(f"cluster.{AUTHZ_CLUSTER}.upstream_rq_total").values()
            )
    return scenario, found


def _wait_fetched(envoy: Envoy, cluster: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not sum(envoy.stats(f"cluster.{cluster}.upstream_rq_200").values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"Envoy did not fetch the JWKS through {cluster}")
        time.sleep(0.1)


def authz_cluster(address: str) -> dict[str, Any]:
    """The `authz` cluster the hybrid export's ext_authz filter names (as `authz envoy-config`)."""
    host, _, port = address.rpartition(":")
    return {
        "name": AUTHZ_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",  # noqa: E501
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": AUTHZ_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": host, "port_value": int(port)}}}}]}
            ],
        },
    }  # fmt: skip


def make_world(directory: Path) -> Iterator[World]:
    pki = make_pki(directory / "pki")
    certs = [pki.client_for(s, stem=f"c{i}") for i, s in enumerate(SPIFFE_IDS)]
    keys = Keys(make_key("RS256"), make_key("ES256"))
    jwks_path = directory / "jwks.json"
    jwks_path.write_text(jwks_json(keys.one, keys.two))
    with EchoUpstream() as upstream, JwksServer([keys.one, keys.two], tls=pki.server) as server:
        yield World(pki, certs, keys, jwks_path, upstream, server)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0-19", help="N or A-B (inclusive)")
    parser.add_argument("--hybrid", action="store_true", help="sets Envoy cannot enforce alone")
    args = parser.parse_args(argv)
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for world in make_world(Path(tmp)):
            for seed in seeds:
                scenario, found = run_seed(world, seed, Path(tmp), args.hybrid)
                status = "ok" if not found else f"{len(found)} disagreements"
                seen = ", ".join(f"{a}/{b}: {n}" for (a, b), n in sorted(scenario.statuses.items()))
                print(f"seed {seed}: {len(scenario.cases)} requests, {status} ({seen})", flush=True)
                if args.hybrid:
                    print(f"  {scenario.hybrid_checks} of them decided by the service")
                for d in found:
                    print(f"  {d}")
                if found:
                    failed += 1
                    print(json.dumps(scenario.files, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
