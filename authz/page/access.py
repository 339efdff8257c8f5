"""Who may read the decision page: open on loopback, a bearer token anywhere else."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

from authz import addresses

# The token itself may come from the environment (a Kubernetes Secret), never from a flag.
ADMIN_TOKEN_ENV = "AUTHZ_ADMIN_TOKEN"


def read_token(token_file: str | None) -> str | None:
    """The page's bearer token: the file's first line, else AUTHZ_ADMIN_TOKEN, else None.
    Raises OSError when the file cannot be read and ValueError when it holds no token."""
    if token_file is not None:
        with open(token_file, encoding="utf-8") as f:
            token = f.read(4096).strip()
        if not token:
            raise ValueError(f"{token_file} holds no token")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def on_loopback(address: str) -> bool:
    """Whether `address` (HOST:PORT) only listens on a loopback interface."""
    host = addresses.parse(address, allow_unix=False, port_zero=True).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def refusal(
    token: str | None, open_without_token: bool, headers: Mapping[str, str]
) -> tuple[int, str] | None:
    """None when the request may read the page, else (status, why)."""
    if token is None:
        if open_without_token:
            return None
        return 403, (
            "the decision page is off: the admin endpoint listens off loopback and no "
            "token is set (--admin-token-file or AUTHZ_ADMIN_TOKEN)"
        )
    scheme, _, given = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return 401, "this page needs the admin bearer token"
    return None
