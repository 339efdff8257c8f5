"""`authz serve --export-envoy DIR`: keep Envoy's copy of the policy (ECDS files) in step with
the set in force, and say so when it is not.

The set in force is written at start (a failure refuses the start) and after every reload.
A write that fails after a reload (a full disk, a read-only mount, a permission changed) leaves
Envoy on the previous filters, which may be looser than the set this service enforces: that
reload is a result of its own (`export_error` in `authz_policy_reloads_total`), it is logged,
`/readyz` shows it under `envoy_export` (still 200: the service decides correctly, and taking
it out of rotation would not bring the files back), `authz_envoy_export_behind` is 1, and the
write is retried with backoff (1 s doubling to 60 s) until the files hold the set in force. A
SIGHUP or a policy change also tries again at once.

The export is hybrid: hosts whose files Envoy cannot enforce alone stay with this service
(ext_authz), and the log says which rules keep them there (docs/export.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from authz.errors import ConfigError

if TYPE_CHECKING:
    from authz.policy import PolicySet

log = logging.getLogger("authz.export")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0

# Writes a set's filters into a directory, raising OSError when it cannot; returns the rules
# that keep a host with this service (for the log line).
Writer = Callable[[str, "PolicySet"], list[str]]


def _hybrid_writer(svid_only: bool) -> Writer:
    """The real writer: the hybrid export as ECDS files. `svid_only`: the setting
    `export_svid_only` (docs/export.md)."""
    from authz.export import export_envoy
    from authz.export.ecds import write_ecds

    def write(directory: str, policy_set: PolicySet) -> list[str]:
        result = export_envoy(policy_set, hybrid=True, svid_only=svid_only)
        write_ecds(directory, result, policy_set.revision)
        return [str(f) for f in result.findings if f.kept]

    return write


def _why(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"


class EnvoyFiles:
    """The ECDS files in `directory`: `publish(set)` writes a set (the reloader calls it after
    each reload; False when the write failed and a retry is scheduled); `start(current)` runs
    the retries; `status()` is the readiness detail; `collect()` the metrics."""

    def __init__(
        self, directory: str, writer: Writer | None = None, svid_only: bool = False
    ) -> None:
        self.directory = directory
        self._write = writer if writer is not None else _hybrid_writer(svid_only)
        self._lock = threading.Lock()  # one write at a time: the reloader's or a retry's
        self._written = ""  # the revision the files hold
        self._wanted = ""  # the revision in force
        self._error = ""
        self._failures = 0  # failed writes, ever (the metric)
        self._streak = 0  # failed writes since the last one that worked
        self._delay = FIRST_RETRY_SECONDS
        self._retry = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write_at_start(self, policy_set: PolicySet) -> None:
        """The first write; ConfigError when it fails (the service does not start)."""
        if not self.publish(policy_set):
            raise ConfigError(f"--export-envoy {self.directory}: {self._error}")

    def publish(self, policy_set: PolicySet) -> bool:
        """Write `policy_set` unless the files hold it already. False when the write failed:
        then a retry is scheduled (with `start`)."""
        with self._lock:
            revision = policy_set.revision
            self._wanted = revision
            if self._written == revision:
                return True
            try:
                kept = self._write(self.directory, policy_set)
            except Exception as error:  # a bug in the export leaves Envoy behind just as well
                self._error = _why(error)
                self._failures += 1
                self._streak += 1
                log.error(
                    "Envoy filters for revision %s could not be written to %s: %s; Envoy keeps "
                    "revision %s; retrying in %gs",
                    revision,
                    self.directory,
                    self._error,
                    self._written or "(none)",
                    self._delay,
                    exc_info=not isinstance(error, OSError),
                )
                self._retry.set()
                return False
            retried = f" (after {self._streak} failed writes)" if self._streak else ""
            self._written, self._error, self._delay = revision, "", FIRST_RETRY_SECONDS
            self._streak = 0
            log.info(
                "Envoy filters for revision %s written to %s%s%s",
                revision,
                self.directory,
                retried,
                f"; decided by this service: {'; '.join(kept)}" if kept else "",
            )
            return True

    def start(self, current: Callable[[], PolicySet]) -> None:
        """Retry failed writes of `current()` on a daemon thread, with backoff."""
        self._thread = threading.Thread(
            target=self._retry_loop, args=(current,), name="authz-export", daemon=True
        )
        self._thread.start()

    def _retry_loop(self, current: Callable[[], PolicySet]) -> None:
        while True:
            self._retry.wait()
            if self._stop.wait(self._delay):
                return
            self._retry.clear()
            self._delay = min(self._delay * 2, MAX_RETRY_SECONDS)
            self.publish(current())

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._retry.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> Mapping[str, str]:
        """The readiness detail: `state` written or behind, the revisions, the last error."""
        with self._lock:
            if self._written == self._wanted:
                return {"state": "written", "revision": self._written}
            return {
                "state": "behind",
                "revision": self._written,
                "in_force": self._wanted,
                "error": self._error,
                "retry_seconds": f"{self._delay:g}",
            }

    def collect(self) -> Iterator[Metric]:
        """`authz_envoy_export_behind` and `authz_envoy_export_failures_total`."""
        with self._lock:
            behind, failures = self._written != self._wanted, self._failures
        gauge = GaugeMetricFamily(
            "authz_envoy_export_behind",
            "1 while the ECDS files of --export-envoy do not hold the policy set in force "
            "(Envoy enforces an older set; the write is retried).",
        )
        gauge.add_metric([], int(behind))
        yield gauge
        counter = CounterMetricFamily(
            "authz_envoy_export_failures",
            "Writes of the ECDS files of --export-envoy that failed.",
        )
        counter.add_metric([], failures)
        yield counter
