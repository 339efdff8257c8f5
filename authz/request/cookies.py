"""The cookie header: the one reader of cookies (tokens and API keys in cookies, and their
removal upstream)."""

from __future__ import annotations


def parse_cookies(header: str) -> dict[str, list[str]]:
    """`{name: values}`. RFC 6265 section 4.2.1: cookie-pairs separated by `; `, values
    optionally in DQUOTEs; a name sent twice keeps both values."""
    cookies: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if not eq or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name.strip(), []).append(value)
    return cookies


def without_cookies(header: str, names: frozenset[str]) -> str | None:
    """`header` without the cookies named `names` (every copy), or None when none was there.
    The result may be empty (every cookie went)."""
    parts = [part.strip() for part in header.split(";") if part.strip()]
    kept = [part for part in parts if part.split("=", 1)[0].strip() not in names]
    if len(kept) == len(parts):
        return None
    return "; ".join(kept)
