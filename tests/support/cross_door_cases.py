"""The cases of the cross-door differential (tests/support/cross_door.py): a policy set and a
list of requests with adversarial spellings, from a seed.

tests/support/export_diff.py's generator makes the policy set (its `--hybrid` form: some
pseudo-header and query conditions); this module adds what the doors read differently (API keys
in a header, a cookie and the query string, tokens in the query string too, `claims_to_headers`,
host, `:authority`, `:path` and `:method` conditions, `ip_blocks`, a deny on a repeated header)
and requests with host dots, case and ports; auth scheme case; a token or header sent twice, a
token in the header and the query; repeated and percent-encoded query parameter names;
slash-only and `;param` paths; a client certificate with two URI SANs; a spoofed identity
header and `X-Forwarded-For`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.policy import PolicySet
from authz.policy.language.patterns import normalize_host
from tests.support.export_diff import SPIFFE_IDS, World, generate, make_world

REQUESTS = 120
API_KEY, WRONG_KEY = "acme-key-0123456789abcdef", "nope-key-0123456789abcdef"
SPOOFED = "spoofed-by-client"
TWO_SANS = len(SPIFFE_IDS)  # the index of the certificate with two URI SANs
HOSTS = (
    "shop.example.com",
    "SHOP.Example.COM",
    "shop.example.com:8443",
    "shop.example.com.",
    "shop.example.com..",
    "shop.example.com.:443",
    "a.svc.local",
    "x.b.a.svc.local",
    "A.SVC.LOCAL.",
    "other.example",
    "unknown.example",
    "a..svc.local",
    "[::1]",
)
PATHS = (
    "/",
    "//",
    "///",
    "///%2E/",
    "/./",
    "/api/orders",
    "/api/orders/42",
    "//api//orders",
    "/api/orders;x=1",
    "/api;/orders",
    "/admin",
    "/admin;jsessionid=1",
    "/admin/users",
    "/%61dmin",
    "/..;/admin",
    "/api/%6Frders/7",
    "/api%2Forders",
    "/partner/a",
    "/partner/a;v=1",
    "/public/a.json",
    "/x/y.json;v=1",
    "/api/orders/%2e%2e/admin",
)
QUERIES = ("", "", "", "?x=1", "?x=1&x=2", "?X=1", "?x", "?debug=%2F")
TOKENS = ("none", "none", "alice", "alice", "bob", "carol", "expired", "tampered", "wrong_aud")
TOKEN_SPOTS = ("header", "header", "header", "header", "query", "query_encoded", "both")
SCHEMES = ("Bearer", "Bearer", "bearer", "BEARER", "BeArEr")
KEY_SPOTS = (
    None,
    None,
    None,
    "header",
    "header_twice",
    "cookie",
    "query",
    "query_encoded",
    "query_twice",
    "wrong_header",
)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    host: str
    cert: int | None  # index into World.certs (TWO_SANS: two URI SANs), None: no certificate
    token: str  # export_diff.Keys kind
    scheme: str
    token_twice: bool
    token_spot: str  # header, query (access_token=), query_encoded (access%5Ftoken=), both
    key_spot: str | None
    tenants: tuple[str, ...]
    spoof: bool  # a client-sent x-user-id and x-authz-principal
    forwarded_for: str | None

    @property
    def query_credential(self) -> bool:
        """A credential in the query string: the HTTP door and forward-auth cannot strip it."""
        in_query = self.key_spot in ("query", "query_encoded", "query_twice")
        return in_query or (self.token != "none" and self.token_spot != "header")

    def target(self, token: str | None = None) -> str:
        query = {
            "query": f"api_key={API_KEY}",
            "query_encoded": f"api%5Fkey={API_KEY}",
            "query_twice": f"api_key={API_KEY}&api_key={API_KEY}",
        }.get(self.key_spot or "", "")
        if token is not None and self.token_spot != "header":
            name = "access%5Ftoken" if self.token_spot == "query_encoded" else "access_token"
            query = f"{query}&{name}={token}" if query else f"{name}={token}"
        if not query:
            return self.path
        return f"{self.path}{'&' if '?' in self.path else '?'}{query}"

    def headers(self, token: str | None, case_id: str) -> list[tuple[str, str]]:
        headers = [("host", self.host), ("x-diff-id", case_id)]
        if token is not None and self.token_spot in ("header", "both"):
            headers += [("authorization", f"{self.scheme} {token}")] * (
                2 if self.token_twice else 1
            )
        if self.key_spot in ("header", "header_twice"):
            headers += [("x-api-key", API_KEY)] * (2 if self.key_spot == "header_twice" else 1)
        elif self.key_spot == "wrong_header":
            headers.append(("x-api-key", WRONG_KEY))
        elif self.key_spot == "cookie":
            headers.append(("cookie", f"theme=dark; apikey={API_KEY}"))
        headers += [("x-tenant", t) for t in self.tenants]
        if self.spoof:
            headers += [("x-user-id", SPOOFED), ("x-authz-principal", SPOOFED)]
        if self.forwarded_for:
            headers.append(("x-forwarded-for", self.forwarded_for))
        return headers

    def describe(self) -> str:
        cert = (
            "no cert"
            if self.cert is None
            else "two URI SANs"
            if self.cert == TWO_SANS
            else SPIFFE_IDS[self.cert]
        )
        parts = [
            cert,
            f"token {self.token}"
            + (f" ({self.scheme}, twice)" if self.token_twice else f" ({self.scheme})")
            + (f" in {self.token_spot}" if self.token_spot != "header" else ""),
        ]
        parts += [f"key {self.key_spot}"] if self.key_spot else []
        parts += [f"x-tenant {','.join(self.tenants)}"] if self.tenants else []
        parts += ["spoofed identity"] if self.spoof else []
        parts += [f"x-forwarded-for {self.forwarded_for}"] if self.forwarded_for else []
        return f"{self.method} {self.host}{self.target('TOKEN')} [{'; '.join(parts)}]"


@dataclass
class Scenario:
    seed: int
    files: dict[str, Any]
    cases: list[Case] = field(default_factory=list)
    statuses: Counter[tuple[int, ...]] = field(default_factory=Counter)


def _adversarial_rules(rng: random.Random) -> list[dict[str, Any]]:
    """Rules on what the doors read differently: pseudo-headers, host, address, a repeated
    header, and an API key principal."""
    pool: list[dict[str, Any]] = [
        {"action": "deny", "when": [{"header": ":path", "prefix": "/admin"}]},
        {"action": "deny", "when": [{"header": ":method", "equals": "DELETE"}]},
        {
            "action": "allow",
            "when": [{"header": ":authority", "equals": "shop.example.com"}],
            "to": [{"paths": ["/api/{**}"]}],
        },
        {"action": "allow", "when": [{"header": "host", "equals": "a.svc.local"}]},
        {"action": "deny", "when": [{"header": "host", "prefix": "other"}]},
        {
            "action": "allow",
            "from": [{"ip_blocks": ["127.0.0.0/8"]}],
            "to": [{"paths": ["/public/*"]}],
        },
        {"action": "deny", "from": [{"ip_blocks": ["10.0.0.0/8"]}]},
        {"action": "deny", "when": [{"header": "x-tenant", "equals": "guest"}]},
        {
            "action": "allow",
            "when": [{"header": "x-tenant", "not_equals": "guest"}],
            "to": [{"paths": ["/api/orders/{*}"]}],
        },
        {
            "action": "allow",
            "from": [{"api_keys": ["partners/*"]}],
            "to": [{"paths": ["/partner/{**}", "/api/{**}"]}],
        },
        {"action": "allow", "from": [{"request_principals": ["*"]}], "to": [{"paths": ["*.json"]}]},
        {
            "action": "allow",
            "to": [{"not_paths": ["/admin", "/admin/{**}"], "methods": ["GET"]}],
            "when": [{"query": "x", "present": True}],
        },
    ]
    return rng.sample(pool, rng.randint(2, 5))


def make_scenario(seed: int, world: World) -> Scenario:
    base = generate(seed, str(world.jwks_path), hybrid=True)
    rng = random.Random(f"cross-door-{seed}")
    files = base.files
    keyed = rng.choice(list(files))
    # Every provider or none (providers of one host reading different places are not exported).
    query_tokens = rng.random() < 0.35
    for number, (name, doc) in enumerate(files.items()):
        auth = doc.setdefault("authentication", {})
        for provider in auth.get("jwt", []):
            if rng.random() < 0.6:
                provider["claims_to_headers"] = {"sub": "x-user-id"}
            # Where the requests carry tokens (the base generator may pick another header).
            provider["from"] = [{"header": "authorization", "prefix": "Bearer "}]
            if query_tokens:
                provider["from"].append({"query": "access_token"})
        if name == keyed:
            auth["api_keys"] = [
                {
                    "name": "partners",
                    "keys_file": "partners.keys.yaml",
                    "from": [{"header": "x-api-key"}, {"query": "api_key"}, {"cookie": "apikey"}],
                }
            ]
        for index, rule in enumerate(_adversarial_rules(rng)):
            doc["rules"].append({"name": f"x{number}-{index}", **rule})
    scenario = Scenario(seed, files)
    for _ in range(REQUESTS):
        scenario.cases.append(
            Case(
                method=rng.choice(("GET", "GET", "POST", "DELETE", "get")),
                path=rng.choice(PATHS) + rng.choice(QUERIES),
                host=rng.choice(HOSTS),
                cert=rng.choice([None, None, None, None, 0, 1, 2, 3, TWO_SANS]),
                token=rng.choice(TOKENS),
                scheme=rng.choice(SCHEMES),
                token_twice=rng.random() < 0.1,
                token_spot=rng.choice(TOKEN_SPOTS),
                key_spot=rng.choice(KEY_SPOTS),
                tenants=tuple(rng.sample(["acme", "guest", "other"], rng.choice([0, 0, 1, 1, 2]))),
                spoof=rng.random() < 0.3,
                forwarded_for=rng.choice([None, None, None, "10.1.2.3", "127.0.0.1, 10.0.0.9"]),
            )
        )
    return scenario


@dataclass(frozen=True)
class Removes:
    """What the service removes on an allow for one host: an API key (when a provider of the
    host reads keys), a client's x-user-id (when a provider fills it from claims), a token
    in the header or query parameter a provider reads (all generated providers are
    `forward: false`); the fixed x-authz-* headers always."""

    api_key: bool = False
    user_id: bool = False
    token_headers: frozenset[str] = frozenset()
    token_query: bool = False

    @classmethod
    def for_case(cls, policies: PolicySet, case: Case) -> Removes:
        host = normalize_host(case.host)
        policy = policies.for_host(host) if host is not None else None
        if policy is None:
            return cls()
        authentication = policy.authentication
        places = [where for p in authentication.jwt_providers for where in p.locations]
        return cls(
            api_key=bool(authentication.api_key_providers),
            user_id="x-user-id" in policy.claim_headers,
            token_headers=frozenset(where.header.lower() for where in places if where.header),
            token_query=any(where.query for where in places),
        )


def worlds(directory: Path) -> Iterator[World]:
    """export_diff's world, plus a certificate with two URI SANs (index TWO_SANS)."""
    for world in make_world(directory):
        world.certs.append(
            world.pki.authority.issue(
                world.pki.directory,
                "two-sans",
                common_name="two",
                uri_sans=[SPIFFE_IDS[1], SPIFFE_IDS[0]],
            )
        )
        yield world
