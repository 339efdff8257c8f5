"""Listen and connect addresses: `host:port`, `[v6]:port`, `:port` or `unix:/path`, parsed in one
place (configuration checks, the admin server, worker addresses, Envoy config and the HTTP server).

`:port` is every IPv4 interface (`0.0.0.0:port`), as Envoy's and OPA's `:9191` examples mean;
`[::]:port` listens on IPv6 too."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

UNIX = "unix:"
ALL_INTERFACES = "0.0.0.0"  # what `:port` means to a server
LOOPBACK = "127.0.0.1"  # where a client on this machine reaches a `:port` server

_HOST_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)*$"
)


class AddressError(ValueError):
    """An address that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Address:
    """`host:port` (an IP or a DNS name; IPv6 without brackets) or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        if self.unix_path is not None:
            return UNIX + self.unix_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_unix(text: str) -> bool:
    return text.startswith(UNIX)


def parse(text: str, *, allow_unix: bool = True, port_zero: bool = False) -> Address:
    """`host:port` with a port in 1-65535, `[v6]:port`, `:port` (every interface) or (when
    allowed) `unix:/path`. `port_zero` also takes port 0 (the OS picks a free port: tests and
    the demo bind so)."""
    if is_unix(text):
        if not allow_unix:
            raise AddressError(f"{text!r}: a unix socket is not supported here; use HOST:PORT")
        if len(text) == len(UNIX):
            raise AddressError(f"{text!r}: the unix socket needs a path")
        return Address(unix_path=text[len(UNIX) :])
    host, sep, port = text.rpartition(":")
    if not sep:
        raise AddressError(f"{text!r} is not HOST:PORT (or :PORT for every interface)")
    if not port.isdigit():
        raise AddressError(f"{text!r}: the port {port!r} is not a number")
    if not (0 if port_zero else 1) <= int(port) <= 65535:
        raise AddressError(f"{text!r}: the port {port} is out of range (1-65535)")
    return Address(_host(text, host, port), int(port))


def _host(text: str, host: str, port: str) -> str:
    """The host part of `text` without IPv6 brackets; raises AddressError."""
    if not host:
        return ALL_INTERFACES
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise AddressError(f"{text!r}: {host} is not an IPv6 address") from None
        return host[1:-1]
    if ":" in host:
        raise AddressError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:{port}")
    if not _HOST_NAME.match(host):
        raise AddressError(f"{text!r}: {host!r} is not a host name or IP address")
    return host


def shifted(text: str, index: int) -> str:
    """`text` moved `index` places: the port plus `index`, or `name.<index>.sock` for a unix
    socket. The port may come out over 65535; `parse` then refuses it."""
    if index == 0:
        return text
    if is_unix(text):
        path = PurePosixPath(text[len(UNIX) :])
        return f"{UNIX}{path.with_name(f'{path.stem}.{index}{path.suffix}')}"
    host, _, port = text.rpartition(":")
    return f"{host}:{int(port) + index}"


def reachable(text: str) -> str:
    """`text` as a client on this machine connects to it: `:port` (a server on every interface)
    at loopback; anything else as it is."""
    return LOOPBACK + text if text.startswith(":") else text


def bindable(text: str) -> str:
    """`text` as a server binds it: `:port` spelled out (grpc refuses an empty host)."""
    return text if is_unix(text) else str(parse(text, port_zero=True))
