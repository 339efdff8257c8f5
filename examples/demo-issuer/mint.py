"""Mint a token from the demo identity provider whose public key is policies/demo-jwks.json.

    .venv/bin/python examples/demo-issuer/mint.py --sub alice --scope "cart orders.read"

For trying the example policies only: the private key beside this file is public knowledge.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jwt

ISSUER = "https://id.shop.example"
KEY = Path(__file__).with_name("private-key.pem")


def mint(
    sub: str, scope: str, *, audience: str = "shop-api", ttl: int = 3600, key: Path = KEY
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "aud": audience,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, key.read_text(), algorithm="ES256", headers={"kid": "demo-2026"})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sub", default="alice")
    parser.add_argument("--scope", default="cart")
    parser.add_argument("--aud", default="shop-api")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds (negative: already expired)")
    parser.add_argument("--key", type=Path, default=KEY, help="the issuer's private key (beside)")
    args = parser.parse_args()
    print(mint(args.sub, args.scope, audience=args.aud, ttl=args.ttl, key=args.key))


if __name__ == "__main__":
    main()
