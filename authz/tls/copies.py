"""Private copies of checked material, for TLS libraries that read only paths (Python's ssl,
granian): the bytes `authz.tls.material.load` checked are written, owner-only, into a directory
of this process's own, so what is served is what was checked even while the originals move."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile

from authz.tls.material import Files, Material


class PrivateCopies:
    """A 0700 directory of copies; `close()` removes it and every copy in it."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="authz-tls-")
        self._serial = itertools.count()

    def write(self, material: Material) -> Files:
        """Write `material` as new files (never over a copy a server may still be reading)."""
        stem = os.path.join(self.directory, f"{next(self._serial)}-{material.fingerprint[:12]}")
        ca = None
        if material.client_ca_pem is not None:
            ca = _write(stem + "-ca.pem", material.client_ca_pem)
        return Files(
            _write(stem + ".pem", material.cert_pem),
            _write(stem + "-key.pem", material.key_pem),
            ca,
        )

    def remove(self, files: Files) -> None:
        for path in files.paths():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write(path: str, data: bytes) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return path
