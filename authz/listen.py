"""Binding a listener (either door's): an address the service cannot use is reported with the
system's own reason before grpc or granian try it (they only say "failed to bind")."""

from __future__ import annotations

import os
import shutil
import socket

from authz import addresses
from authz.config import Settings


class ListenError(Exception):
    """An address the service cannot listen on; the message says which and why."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")


def probe_bind(address: str) -> None:
    """Bind `address` with a plain socket (as grpc would: SO_REUSEADDR) and release it, so an
    address that cannot be used is reported with the system's reason. Raises ListenError."""
    try:
        parsed = addresses.parse(address, port_zero=True)
    except addresses.AddressError as error:
        raise ListenError(address, str(error)) from error
    if parsed.unix_path is not None:
        parent = os.path.dirname(os.path.abspath(parsed.unix_path))
        if not os.path.isdir(parent):
            raise ListenError(address, f"the directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ListenError(address, f"permission denied in {parent}")
        return
    try:
        infos = socket.getaddrinfo(
            parsed.host, parsed.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ListenError(address, str(error.strerror).lower()) from error
    for family, kind, proto, _name, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                raise ListenError(address, describe_os_error(error)) from error


def describe_os_error(error: OSError) -> str:
    """ "Address already in use" -> "address already in use"."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def set_socket_access(path: str, settings: Settings) -> None:
    """--socket-mode and --socket-group: let Envoy running as another user connect."""
    try:
        if settings.socket_group is not None:
            group = settings.socket_group
            shutil.chown(path, group=int(group) if group.isdigit() else group)
        if settings.socket_mode is not None:
            os.chmod(path, int(settings.socket_mode, 8))
    except (OSError, LookupError) as error:
        reason = describe_os_error(error) if isinstance(error, OSError) else str(error)
        raise ListenError(f"unix:{path}", f"cannot set its owner or mode: {reason}") from error
