"""Hot reload of the policy directory: watch, load and compile off the request path, swap whole.

Three things can ask for a reload: a change in the directory (seen by `watchfiles`, or by a
polling fallback when it is not available or fails), SIGHUP, and a direct call. All of them only
*request* one: a single worker thread does the loading, so requests coalesce (a burst of
editor writes or a Kubernetes ConfigMap update makes one or two loads, not twenty) and a
signal handler or the event loop never waits on file I/O or compilation.

A new set is swapped in with one `PolicyStore.swap`, so a check in flight keeps the set it
started with and the next one sees the new set. A set that does not load (a YAML error, a
half-written file, a rule naming a missing role) is rejected with every problem logged, and the
last good set stays in force. Every outcome is logged: loaded, rejected, or unchanged (with the
revision and rule count, and how long the load took). A half-written file is followed by the
rest of the write, which is another change, which is another load: the directory is always
loaded again once it is quiet.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from authz.errors import PolicyError

if TYPE_CHECKING:  # the policy package is imported late at run time (see _default_loader)
    from authz.policy.decide.compiler import PolicySet
    from authz.policy.decide.rules import CompiledRule
    from authz.policy.language.spec import JwtProvider
    from authz.policy.load.store import PolicyStore

log = logging.getLogger("authz.reload")


class ReloadResult(StrEnum):
    """How a reload attempt ended (the `result` label of `authz_policy_reloads_total`)."""

    OK = "ok"  # loaded, or unchanged, and in force everywhere it is published
    ERROR = "error"  # rejected: the last good set stays in force
    EXPORT_ERROR = "export_error"  # in force here, but its copy for Envoy was not written


# Called after every reload attempt with its result. Listeners run on the reload thread and
# must be quick and must not raise (metrics count here).
ReloadListener = Callable[[ReloadResult], None]
# Writes the set in force where others read it (`authz.envoy_files.EnvoyFiles.publish`);
# False when it could not (the publisher retries on its own).
Publisher = Callable[["PolicySet"], bool]


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """The last reload attempt, as the decision page shows it."""

    time: float  # when it finished (Unix seconds)
    outcome: str  # "loaded", "unchanged" or "rejected"
    revision: str  # the revision in force after it
    loaded_at: float | None  # when the set in force was loaded; None: before this reloader
    problems: tuple[str, ...] = ()  # a rejected set's problems, FILE:LINE first


class _Keys(Protocol):
    """What the reloader needs of the key registry (authz.identity.keys.KeyRegistry)."""

    def ensure(self, providers: Iterable[JwtProvider]) -> None: ...


def _default_loader(directory: str) -> PolicySet:
    # Imported late: the reloader is a leaf of the app and must not pull in the policy package
    # at import time of the CLI.
    from authz.policy import load_policy_set

    return load_policy_set(directory)


class PolicyReloader:
    """Keeps `store` in step with the policy files in `directory`.

    `reload()` loads synchronously (for tests and tools); `request_reload()` only schedules one
    on the worker thread and returns at once (safe from a signal handler or the event loop).
    `start()` starts the worker and the directory watcher; `close()` stops both. A reloader
    that was never started still reloads on `reload()` (tools and tests use it so).
    """

    def __init__(
        self,
        directory: str,
        store: PolicyStore,
        keys: _Keys | None = None,
        *,
        listeners: Iterable[ReloadListener] = (),
        loader: Callable[[str], PolicySet] = _default_loader,
        poll_interval: float = 1.0,
        publish: Publisher | None = None,
    ) -> None:
        self.directory = directory
        self._store = store
        self._keys = keys
        self._listeners: list[ReloadListener] = list(listeners)
        self._load = loader
        self._publish = publish
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last: ReloadRecord | None = None

    # -- reloading -------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the directory now; swap the new set in if it is valid, then publish it. True
        unless rejected (a set in force whose copy could not be published is True)."""
        with self._lock:
            ok, retired = self._reload_locked()
            result = ReloadResult.OK if ok else ReloadResult.ERROR
            # Unchanged too: a SIGHUP retries a copy that could not be written before.
            if ok and self._publish is not None and not self._publish(self._store.current):
                result = ReloadResult.EXPORT_ERROR
                if self.last is not None:  # the decision page shows it as the reload's outcome
                    self.last = replace(self.last, outcome=str(result))
        for listener in list(self._listeners):
            try:
                listener(result)
            except Exception:  # a listener's fault must never stop reloads
                log.exception("reload listener failed")
        if retired is not None:
            retired.release()
        return ok

    def _reload_locked(self) -> tuple[bool, _Retired | None]:
        old = self._store.current
        started = time.monotonic()
        try:
            new = self._load(self.directory)
        except PolicyError as error:
            log.error(
                "policy reload rejected, revision %s stays in force: %d problem(s) in %s",
                old.revision,
                len(error.problems),
                self.directory,
            )
            for problem in error.problems:
                log.error("  %s", problem)
            self._record("rejected", old.revision, tuple(str(p) for p in error.problems))
            return False, None
        except Exception:
            # An unexpected failure (a bug, an unreadable directory) is a rejection too: the
            # last good set is still the safest thing to serve.
            log.exception("policy reload failed, revision %s stays in force", old.revision)
            self._record("rejected", old.revision, ("the reload failed: see the service's log",))
            return False, None
        seconds = time.monotonic() - started
        if new.revision == old.revision:
            log.info(
                "policy reload: revision %s unchanged (%s) in %s, %.1fs",
                new.revision,
                rules_text(new.rule_count),
                self.directory,
                seconds,
            )
            self._record("unchanged", old.revision)
            return True, _Retired(new)
        if self._keys is not None:
            # Keys for the union first, so a check in flight under the old set and the first
            # checks under the new one both find their providers' keys; then drop the old ones.
            self._keys.ensure([*old.jwt_providers, *new.jwt_providers])
        self._store.swap(new)
        if self._keys is not None:
            self._keys.ensure(new.jwt_providers)
        log.info(
            "policies reloaded from %s: %s, revision %s (was %s), %.1fs",
            self.directory,
            rules_text(new.rule_count),
            new.revision,
            old.revision,
            seconds,
        )
        self._record("loaded", new.revision, loaded=True)
        return True, _Retired(old)

    def _record(
        self, outcome: str, revision: str, problems: tuple[str, ...] = (), *, loaded: bool = False
    ) -> None:
        now = time.time()
        previous = self.last.loaded_at if self.last is not None else None
        self.last = ReloadRecord(now, outcome, revision, now if loaded else previous, problems)

    def request_reload(self) -> None:
        """Ask the worker for a reload; returns at once. Safe from a signal handler."""
        self._pending.set()

    # -- threads ---------------------------------------------------------------------------

    def start(self, *, watch: bool = True, polling: bool = False) -> None:
        """Start the reload worker and, with `watch`, the directory watcher (`polling`: poll
        instead of using watchfiles, for file systems without change events)."""
        self._spawn("authz-reload", self._work)
        if watch:
            self._spawn("authz-watch", self._poll if polling else self._watch_directory)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watcher and the worker (a load in progress finishes first)."""
        self._stop.set()
        self._pending.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            self._pending.wait()
            if self._stop.is_set():
                return
            # Cleared before loading: a change during the load sets it again and is not lost.
            self._pending.clear()
            try:
                self.reload()
            except Exception:  # never let the worker die: the next change must still load
                log.exception("policy reload crashed")

    def _watch_directory(self) -> None:
        try:
            import watchfiles
        except ImportError:
            self._poll()
            return
        log.info("watching %s for policy changes", self.directory)
        try:
            # No filter: a ConfigMap update is a rename of the `..data` symlink, which is no
            # *.yaml; a change that turns out to be irrelevant costs one load with the same
            # revision, which is a no-op.
            for _changes in watchfiles.watch(
                self.directory,
                watch_filter=None,
                stop_event=self._stop,
                raise_interrupt=False,
                debounce=800,
                step=50,
                rust_timeout=1000,
                yield_on_timeout=False,
            ):
                self.request_reload()
        except Exception:
            if self._stop.is_set():
                return
            log.warning(
                "watching %s failed; polling it every %.1fs instead",
                self.directory,
                self._poll_interval,
                exc_info=True,
            )
            self._poll()

    def _poll(self) -> None:
        last = directory_fingerprint(self.directory)
        while not self._stop.wait(self._poll_interval):
            now = directory_fingerprint(self.directory)
            if now != last:
                last = now
                self.request_reload()


def rules_text(count: int) -> str:
    """ "1 rule", "2 rules"."""
    return f"{count} rule{'' if count == 1 else 's'}"


class _Retired:
    """A policy set no longer in force, to be freed a slice at a time (authz.policy.load.building):
    a 40,000-rule set is a million objects, and freeing it in one go holds the GIL for a
    noticeable fraction of a second. The rules are held here, the set itself is dropped."""

    # A check that started under the old set may still hold it for a moment; freeing then
    # waits that long at most, so the rules are freed here and not in that check.
    WAIT_SECONDS = 2.0

    def __init__(self, policy_set: PolicySet) -> None:
        self._rules: list[CompiledRule] = list(policy_set.rules)
        self._set: Callable[[], PolicySet | None] = weakref.ref(policy_set)

    def release(self) -> None:
        from authz.policy.load import building  # late, as _default_loader

        deadline = time.monotonic() + self.WAIT_SECONDS
        while self._set() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        building.release(self._rules, step=50)


def directory_fingerprint(directory: str) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when a policy file changes: each entry's name, and of what it resolves to
    (following symlinks, so a ConfigMap `..data` swap shows) the inode, size and mtime."""
    entries: list[tuple[str, int, int, int]] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            entries.append((name, -1, -1, -1))  # a dangling symlink mid-swap
            continue
        entries.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(entries)
