"""Checks on setting values, named by the declarations in authz.config (pure, no I/O except
the few that look at the file system, which declare `paths=True` there)."""

from __future__ import annotations

import grp
import os
import urllib.parse
from collections.abc import Callable

from authz import addresses
from authz.request.syntax import TOKEN

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class Invalid(Exception):
    """A value that is wrong; the caller adds where it came from."""


def check_address(address: str, *, allow_unix: bool) -> None:
    """`host:port` (`[v6]:port` for IPv6) with a port in 1-65535, or `unix:/path`."""
    try:
        addresses.parse(address, allow_unix=allow_unix)
    except addresses.AddressError as error:
        raise Invalid(str(error)) from None


def listen_addresses(value: tuple[str, ...]) -> None:
    if not value:
        raise Invalid("at least one address is needed")
    for address in value:
        check_address(address, allow_unix=True)


def optional_listen_addresses(value: tuple[str, ...]) -> None:
    for address in value:
        check_address(address, allow_unix=True)


# authz.wire.http.HttpMode's values (this module stays free of the wire layer).
HTTP_MODES = ("envoy", "forward-auth")


def path_prefix(value: str) -> None:
    """Envoy's http_service path_prefix: empty, or an absolute path without a query."""
    if value and (not value.startswith("/") or "?" in value or "#" in value):
        raise Invalid(f"{value!r}: a path prefix starts with '/' and has no '?' or '#'")


def admin_address(value: str | None) -> None:
    if value is not None:
        check_address(value, allow_unix=False)


def directory(value: str) -> None:
    if not os.path.isdir(value):
        raise Invalid(f"{value!r} is not a directory" if os.path.exists(value) else _missing(value))


def optional_file(value: str | None) -> None:
    if value is not None and not os.path.isfile(value):
        raise Invalid(f"{value!r} is not a file" if os.path.exists(value) else _missing(value))


def _missing(value: str) -> str:
    """A relative path is the working directory's (a config file's too): say which one."""
    where = "" if os.path.isabs(value) else f" in {os.getcwd()}"
    return f"{value!r} does not exist{where}"


def log_path(value: str | None) -> None:
    if value is None or value == "-":
        return
    if os.path.isdir(value):
        raise Invalid(f"{value!r} is a directory; name a file, or '-' for stdout")
    parent = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(parent):
        raise Invalid(f"{value!r}: the directory {parent!r} does not exist")


def header(value: str) -> None:
    if not TOKEN.fullmatch(value):
        raise Invalid(f"{value!r} is not a valid header name")


def headers(value: tuple[str, ...]) -> None:
    for name in value:
        header(name)


def at_least_one(value: int) -> None:
    if value < 1:
        raise Invalid(f"must be at least 1, got {value}")


def positive_seconds(value: float) -> None:
    if not value > 0:
        raise Invalid(f"must be more than 0 seconds, got {value}")


def ratio(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise Invalid(f"must be from 0 to 1, got {value}")


def otlp_url(value: str | None) -> None:
    """An http(s) URL with a host, and no query or credentials (they would be logged)."""
    if value is None:
        return
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{value!r}: must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise Invalid(f"{value!r}: must not carry a query, a fragment or credentials")


def key_values(values: tuple[str, ...]) -> None:
    for value in values:
        key, sep, _ = value.partition("=")
        if not sep or not key.strip():
            raise Invalid(f"{value!r}: must be KEY=VALUE")


def client_identities(values: tuple[str, ...]) -> None:
    from authz.tls.clients import entry_problem

    for value in values:
        problem = entry_problem(value)
        if problem is not None:
            raise Invalid(problem)


def one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}, got {value!r}")

    return check


def file_mode(value: str | None) -> None:
    """An octal permission mode such as `660` or `0o660` (for a unix socket)."""
    if value is None:
        return
    try:
        mode = int(value, 8)
    except ValueError:
        raise Invalid(f"{value!r} is not an octal mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise Invalid(f"{value!r} is not a permission mode (0000-0777)")


def group(value: str | None) -> None:
    """A group name or id known to this system."""
    if value is None or value.isdigit():
        return
    try:
        grp.getgrnam(value)
    except KeyError:
        raise Invalid(f"no group named {value!r}") from None


def rate_limit_store(value: str | None) -> None:
    """`memory`, or a store URL as `authz.limits.stores.parse` reads it: one Redis, a Redis
    Cluster or Sentinel."""
    if value is None or value == "memory":
        return
    from authz.limits.stores import parse

    try:
        parse(value)
    except ValueError as error:
        raise Invalid(f"{value!r}: {error}") from None
