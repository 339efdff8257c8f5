"""Mint a token from the demo identity provider whose public key is policies/demo-jwks.json.

    .venv/bin/python examples/demo-issuer/mint.py --sub alice --scope "cart orders.read"
    .venv/bin/python examples/demo-issuer/mint.py --claim tenant_id=acme --claim 'roles=["support"]'

For trying the example policies only: the private key beside this file is public knowledge.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jwt

ISSUER = "https://id.shop.example"
KEY = Path(__file__).with_name("private-key.pem")


def mint(
    sub: str,
    scope: str,
    *,
    audience: str = "shop-api",
    ttl: int = 3600,
    key: Path = KEY,
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "aud": audience,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        **(extra or {}),
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
    parser.add_argument(
        "--claim",
        action="append",
        default=[],
        type=claim,
        metavar="NAME=VALUE",
        help="one more claim; VALUE is JSON when it parses as JSON (a list, a number), else\n"
        "text: --claim tenant_id=acme --claim 'roles=[\"tenant-admin\"]'; may be repeated",
    )
    args = parser.parse_args()
    extra = dict(args.claim)
    print(mint(args.sub, args.scope, audience=args.aud, ttl=args.ttl, key=args.key, extra=extra))


def claim(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` as (name, the JSON value, or the text when VALUE is not JSON)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=VALUE")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


if __name__ == "__main__":
    main()
