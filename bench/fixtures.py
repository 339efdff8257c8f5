"""Generated inputs for the benchmarks: policy sets of N rules, signing keys, tokens, and the
realistic CheckRequest (1,000 rules, an RS256 bearer token, an mTLS principal, typical headers).

Everything is made fresh in a temporary directory per run, so a bench never depends on the
example policies in `policies/` (which change as the product does).
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz._proto.envoy.service.auth.v3 import external_auth_pb2

ISSUER = "https://id.bench.example"
AUDIENCE = "bench-api"
HOST = "api.bench.example"
PRINCIPAL = "spiffe://cluster.local/ns/shop/sa/frontend"
# The realistic request's path: one rule (`orders-api`) allows it; the generated rules share
# its method but not its first segment, so the index has to do its job.
PATH = "/api/orders/42"
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")


@dataclass(frozen=True, slots=True)
class Key:
    """A private key with its algorithm and kid."""

    alg: str
    kid: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "use": "sig", "alg": self.alg, "kid": self.kid}

    def token(self, *, jti: str = "", lifetime: float = 3600.0) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": AUDIENCE,
            "scope": "orders.read cart",
            "iat": now,
            "exp": int(now + lifetime),
        }
        if jti:
            claims["jti"] = jti
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def make_key(alg: str) -> Key:
    """A fresh key; RSA is 2048 bits, the common size at identity providers."""
    private: Any
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    return Key(alg, f"bench-{alg.lower()}", private)


def generated_rules(n: int) -> list[dict[str, Any]]:
    """`n` rules shaped like a big real set: one per service prefix, every tenth a deny, the
    methods cycling; plus the one rule the realistic request needs."""
    rules: list[dict[str, Any]] = []
    for i in range(n - 1):
        method = ("GET", "POST", "PUT", "DELETE")[i % 4]
        rules.append(
            {
                "name": f"rule-{i}",
                "action": "deny" if i % 10 == 0 else "allow",
                "from": [{"namespaces": [f"ns{i % 50}"]}],
                "to": [{"methods": [method], "paths": [f"/svc{i}/{{**}}"]}],
            }
        )
    rules.append(
        {
            "name": "orders-api",
            "action": "allow",
            # Either identity will do: the workload (mTLS) or a customer with a token.
            "from": [{"principals": [PRINCIPAL]}, {"issuers": [ISSUER]}],
            "to": [{"methods": ["GET", "HEAD"], "paths": ["/api/orders", "/api/orders/{*}"]}],
        }
    )
    return rules


def write_policies(directory: Path, n_rules: int, keys: list[Key]) -> Path:
    """A policy directory of `n_rules` rules for HOST with an mTLS trust domain and a JWT
    provider whose JWKS file holds `keys`. JSON is valid YAML, and much faster to write."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "jwks.json").write_text(json.dumps({"keys": [k.jwk() for k in keys]}))
    policy = {
        "hosts": [HOST],
        "authentication": {
            "mtls": {"trust_domains": ["cluster.local"]},
            "jwt": [
                {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "jwks_file": "jwks.json",
                    "algorithms": list(ALGORITHMS),
                    "claims_to_headers": {"sub": "x-user-id"},
                }
            ],
        },
        "rules": generated_rules(n_rules),
    }
    (directory / "bench.yaml").write_text(json.dumps(policy))
    return directory


def typical_headers(token: str | None) -> dict[str, str]:
    """Headers a browser-ish client and a mesh add; what Envoy forwards to ext_authz."""
    headers = {
        ":authority": HOST,
        ":method": "GET",
        ":path": PATH + "?page=2&size=50",
        ":scheme": "https",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate, br",
        "accept-language": "en-US,en;q=0.9",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "x-request-id": "5a4b2c1d-0e9f-4a8b-9c7d-6e5f4a3b2c1d",
        "x-forwarded-proto": "https",
        "x-envoy-expected-rq-timeout-ms": "2000",
        "cookie": "theme=dark; lang=en",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


def check_request(
    token: str | None, *, principal: str = PRINCIPAL
) -> external_auth_pb2.CheckRequest:
    """The CheckRequest Envoy sends for one realistic request."""
    message = external_auth_pb2.CheckRequest()
    attributes = message.attributes
    attributes.source.address.socket_address.address = "10.0.3.17"
    attributes.source.address.socket_address.port_value = 53124
    attributes.source.principal = principal
    attributes.destination.address.socket_address.address = "10.0.5.2"
    attributes.destination.address.socket_address.port_value = 8443
    attributes.destination.principal = "spiffe://cluster.local/ns/shop/sa/orders"
    http = attributes.request.http
    headers = typical_headers(token)
    http.id = "17265034526612189387"
    http.method = "GET"
    http.path = headers[":path"]
    http.host = HOST
    http.scheme = "https"
    http.protocol = "HTTP/2"
    http.headers.update(headers)
    return message


def grpc_frame(payload: bytes) -> bytes:
    """The 5-byte gRPC length prefix (uncompressed) + the message: an h2load body file."""
    return struct.pack(">BI", 0, len(payload)) + payload


def random_jti() -> str:
    return os.urandom(8).hex()
