"""The serving certificates in force, kept in step with their files, and their metrics.

Each TLS listener's files (certificate chain, key, client CA bundle) are checked at start
(`load_all`: a pair that cannot be served, expired or not yet valid included, stops the start)
and then watched: polled every second by `os.stat`, which follows symlinks, so the `..data`
swap by which Kubernetes (Secrets, cert-manager) and SPIRE's helper replace files shows as a
change, and re-read on SIGHUP. A changed set of files is loaded and checked whole, off every
request path; what passes replaces the material in force for *new* connections (the listeners
ask `current()` at each handshake, or are told through `subscribe`). What fails is refused with
one log line and `authz_tls_certificate_reloads_total{result="rejected"}`, and the material in
force keeps serving. A half-written pair fails once and loads on the write that completes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from authz.tls.material import Material, MaterialError, load
from authz.tls.plan import ListenerTls

log = logging.getLogger("authz.tls")

POLL_SECONDS = 1.0
EXPIRY_METRIC = "authz_tls_certificate_expiry_timestamp_seconds"
RELOADS_METRIC = "authz_tls_certificate_reloads_total"
REFUSED_METRIC = "authz_tls_refused_total"
# Why a client was refused (the `reason` label): no or an untrusted certificate, a failed TLS
# handshake of any other kind, or a certificate whose identity is not allowed.
REFUSAL_REASONS = ("handshake", "identity")

Fingerprint = tuple[tuple[int, int, int], ...]
Subscriber = Callable[[Material], None]


def files_fingerprint(paths: tuple[str, ...]) -> Fingerprint:
    """What changes when one of `paths` (or a symlink on the way to it) is replaced."""
    stamps: list[tuple[int, int, int]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append((-1, -1, -1))  # missing mid-swap: a change, then the next one
            continue
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ServingCertificates:
    """The checked `Material` of every TLS listener of a plan (authz.tls.plan.tls_plan).
    Also a Prometheus collector: register it on the service's registry."""

    def __init__(
        self, plan: Mapping[str, ListenerTls], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.plan = dict(plan)
        self._clock = clock
        self._current: dict[str, Material] = {}
        self._seen: dict[str, Fingerprint] = {}
        self._subscribers: dict[str, list[Subscriber]] = {name: [] for name in plan}
        self._reloads: Counter[tuple[str, str]] = Counter()
        self._refused: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._expired_said: dict[str, Material] = {}

    def load_all(self) -> None:
        """Load every listener's files now (MaterialError, naming the file, if one cannot be
        served: at start, there is nothing older to keep serving)."""
        for name, tls in self.plan.items():
            seen = files_fingerprint(tls.files.paths())
            try:
                material = load(tls.files, now=self._clock())
            except MaterialError as error:
                raise MaterialError(f"TLS of the {name} listener: {error}") from error
            self._current[name], self._seen[name] = material, seen
            log.info("TLS on the %s listener: %s", name, material.describe())

    def current(self, listener: str) -> Material:
        return self._current[listener]

    def subscribe(self, listener: str, subscriber: Subscriber) -> None:
        """Call `subscriber` (on the watcher's thread) with each new material of `listener`."""
        self._subscribers[listener].append(subscriber)

    def refused(self, listener: str, reason: str) -> None:
        """Count a client refused by `listener` (`reason` in REFUSAL_REASONS)."""
        with self._lock:
            self._refused[(listener, reason)] += 1

    # -- reloading -------------------------------------------------------------------------

    def reload(self, *, force: bool = False) -> None:
        """Load every listener whose files changed (all of them with `force`, as on SIGHUP)."""
        for name, tls in self.plan.items():
            seen = files_fingerprint(tls.files.paths())
            if not force and seen == self._seen.get(name):
                continue
            self._seen[name] = seen
            old = self._current[name]
            try:
                new = load(tls.files, now=self._clock())
            except MaterialError as error:
                with self._lock:
                    self._reloads[(name, "rejected")] += 1
                log.error(
                    "TLS on the %s listener: new files refused, %s keeps serving: %s",
                    name,
                    old.describe(),
                    error,
                )
                continue
            if (
                new.cert_pem == old.cert_pem
                and new.key_pem == old.key_pem
                and (new.client_ca_pem == old.client_ca_pem)
            ):
                continue  # touched, or re-read on SIGHUP: nothing new to serve
            self._current[name] = new
            with self._lock:
                self._reloads[(name, "loaded")] += 1
            log.info("TLS on the %s listener: new connections get %s", name, new.describe())
            for subscriber in self._subscribers[name]:
                try:
                    subscriber(new)
                except Exception:
                    log.exception("TLS on the %s listener: applying the new files failed", name)

    def request_reload(self) -> None:
        """Re-read every file soon, changed or not (SIGHUP); returns at once."""
        self._force = True
        self._wake.set()

    def start(self, poll_seconds: float = POLL_SECONDS) -> None:
        if self._thread is not None or not self.plan:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(poll_seconds,), name="authz-tls-watch", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            force, self._force = self._force, False
            try:
                self.reload(force=force)
                self._warn_expired()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("TLS reload failed")

    def _warn_expired(self) -> None:
        """Say once per certificate when the one in force has expired: clients refuse it, and
        only new files (a renewal that did not happen) can help."""
        now = self._clock()
        for name, material in self._current.items():
            if now >= material.not_after and self._expired_said.get(name) is not material:
                self._expired_said[name] = material
                log.error(
                    "TLS on the %s listener: the certificate in force has expired, clients "
                    "refuse it: %s",
                    name,
                    material.describe(),
                )

    # -- metrics ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            EXPIRY_METRIC,
            "notAfter (Unix time) of the certificate each TLS listener serves.",
            labels=("listener",),
        )
        for name, material in sorted(self._current.items()):
            expiry.add_metric([name], material.not_after)
        yield expiry
        with self._lock:
            reloads, refused = dict(self._reloads), dict(self._refused)
        loaded = CounterMetricFamily(
            RELOADS_METRIC,
            "Changed TLS files loaded (served to new connections) or rejected (the old ones kept).",
            labels=("listener", "result"),
        )
        for name in sorted(self.plan):
            for result in ("loaded", "rejected"):
                loaded.add_metric([name, result], reloads.get((name, result), 0))
        yield loaded
        clients = CounterMetricFamily(
            REFUSED_METRIC,
            "Clients refused by a TLS listener: a failed handshake, or an identity not allowed.",
            labels=("listener", "reason"),
        )
        for name in sorted(self.plan):
            for reason in REFUSAL_REASONS:
                clients.add_metric([name, reason], refused.get((name, reason), 0))
        yield clients
