"""A real nginx (Debian's nginx-light) running the shipped forward-auth config, for tests.

    with Nginx(tmp_path, authz="127.0.0.1:9292", upstream="127.0.0.1:8000") as nginx:
        nginx.url                 # http://127.0.0.1:PORT

It runs deploy/nginx/site.conf (with authz.conf and authz-location.conf beside it, unchanged)
with only the three addresses replaced, under a temporary prefix (pid, logs and temp paths
there), on a free loopback port, in the foreground as one process (`master_process off`: no
worker to switch users to), and is always stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from authz.wire.http import PROXY_REPLACES
from tests.support.ports import LOOPBACK, free_port, wait_for_port
from tests.support.service import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "nginx"
# What tests replace in site.conf: the addresses of the example (nothing else changes).
SITE_AUTHZ = "server 127.0.0.1:9292;"
SITE_APP = "server 127.0.0.1:8000;"
SITE_LISTEN = "listen 8080;"

_MAIN = """\
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
master_process off;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include site.conf;
}}
"""


def replaced_headers() -> str:
    """The X-Authz-Proxy-Replaces value deploy/nginx/authz.conf sends (a proxy's list)."""
    text = (DEPLOY / "authz.conf").read_text()
    (value,) = re.findall(rf'proxy_set_header {PROXY_REPLACES} "([^"]*)";', text, re.IGNORECASE)
    return str(value)


def nginx_binary() -> str:
    """The nginx binary; skips the test (saying how to get it) when there is none."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    message = "no nginx: ./dev test installs it as root with apt-get (apt-get install nginx-light)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI must run these, not skip them
    pytest.skip(message)


def site_config(authz: str, upstream: str, port: int) -> str:
    """deploy/nginx/site.conf for these addresses (each replaced exactly once)."""
    text = (DEPLOY / "site.conf").read_text()
    for old, new in (
        (SITE_AUTHZ, f"server {authz};"),
        (SITE_APP, f"server {upstream};"),
        (SITE_LISTEN, f"listen {LOOPBACK}:{port};"),
    ):
        assert text.count(old) == 1, f"deploy/nginx/site.conf must hold {old!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in front of `upstream` (host:port), asking `authz` (host:port, a forward-auth
    listener) about every request."""

    def __init__(self, workdir: Path, *, authz: str, upstream: str) -> None:
        self.binary = nginx_binary()
        self.prefix = workdir
        self.authz, self.upstream = authz, upstream
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        for name in ("authz.conf", "authz-location.conf"):
            shutil.copyfile(DEPLOY / name, self.prefix / name)
        (self.prefix / "nginx.conf").write_text(_MAIN.format(prefix=self.prefix))
        for _attempt in range(5):  # the port may be taken meanwhile: retry on another
            self.port = free_port()
            (self.prefix / "site.conf").write_text(
                site_config(self.authz, self.upstream, self.port)
            )
            self._process = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                 "-e", str(self.prefix / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._process.poll() is None:
                try:
                    wait_for_port(LOOPBACK, self.port, timeout=0.2)
                    return self
                except TimeoutError:
                    continue
            self.stop()
            if "in use" not in self.log():
                break
        raise RuntimeError(f"nginx did not start: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> Nginx:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
