"""The request method as policies name it: a case-sensitive HTTP token, upper case."""

from __future__ import annotations

from authz.request.syntax import TOKEN


def check_method(method: str) -> None:
    """HTTP methods are case-sensitive tokens; the policy writes them as sent (upper case)."""
    if not TOKEN.fullmatch(method):
        raise ValueError(f"{method!r} is not an HTTP method")
    if method != method.upper():
        raise ValueError(f"{method!r}: methods are upper case; did you mean {method.upper()!r}?")
