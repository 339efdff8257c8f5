"""Key sources for JWT providers, kept fresh in the background.

`KeyRegistry.key_set` only reads what the background fetchers last stored. Remote key sets (a
`jwks_uri`, or OIDC discovery) are fetched at start in a background thread, refreshed every
`refresh_seconds`, refetched early when a token names an unknown `kid` (at most once per
`unknown_kid_cooldown` per source, so a flood of made-up kids cannot hammer the IdP), and the
last good key set is kept while the IdP is down or answers garbage (Envoy's jwt_authn does the
same with its `async_fetch`). Fetches are bounded in time and size.

The one wait a check may do: the first token signed by a newly rotated key names a kid only the
refetch it triggers can bring, so `KeyRegistry.refetch` hands out a `Refetch` that such checks
wait for, all for the same fetch, and never past `unknown_kid_wait` seconds after it started
(well inside Envoy's 0.5 s check timeout). Checks whose kid is known never wait.

Plain threads and urllib are used on purpose: the registry works the same on the gRPC server's
threads, on the HTTP door's event loop, in the CLI and in tests, and never touches the caller's
event loop (`Refetch.wait_async` only schedules a wake-up on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from authz.identity.jwks import KeySet
from authz.identity.key_fetch import Fetcher, describe
from authz.policy.language.spec import JwtProvider

__all__ = [
    "UNKNOWN_KID_WAIT_SECONDS",
    "FetchResult",
    "KeyRegistry",
    "KeyState",
    "Refetch",
    "SourceKey",
    "source_key",
]

# How often a remote key set is fetched again (the export gives Envoy the same cache duration).
REFRESH_SECONDS = 300.0
FETCH_TIMEOUT_SECONDS = 5.0
log = logging.getLogger("authz.keys")

# A source is identified by what it fetches, not by the provider object: the same issuer and
# key source in two policy files, or across a reload, share one fetcher.
SourceKey = tuple[str, str | None, str | None, str | None, bool]


def source_key(provider: JwtProvider) -> SourceKey:
    """The identity of the key source a provider uses."""
    return (
        provider.issuer,
        provider.jwks_uri,
        provider.jwks_file,
        provider.jwks_json,
        provider.discovery,
    )


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One attempt to load a key set, for metrics (`on_fetch`) and logs.

    `trigger` is "start", "refresh", "retry", "unknown_kid" or "reload" (a policy reload
    re-reads key files); `error` is None on success.
    """

    issuer: str
    trigger: str
    ok: bool
    error: str | None
    keys: int
    skipped: tuple[str, ...]
    seconds: float


OnFetch = Callable[[str, FetchResult], None]

# How long after an unknown-kid refetch starts a check may wait for it: well inside Envoy's
# 0.5 s ext_authz timeout (the generated config's), with room for the check itself.
UNKNOWN_KID_WAIT_SECONDS = 0.2


class Refetch:
    """One refetch triggered by an unknown kid. Checks that need its result wait for it (on a
    thread with `wait`, on an event loop with `wait_async`), never past `deadline`
    (time.monotonic()). Thread-safe."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        """The fetch finished (with new keys or not), or its source was closed."""
        return self._done.is_set()

    def wait(self) -> None:
        """Block the calling thread until done or the deadline."""
        self._done.wait(max(0.0, self.deadline - time.monotonic()))

    async def wait_async(self) -> None:
        """Until done or the deadline, without blocking the running event loop."""
        remaining = self.deadline - time.monotonic()
        if self.done or remaining <= 0:
            return
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # on the fetcher thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, woken)

        self._when_done(wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken, remaining)

    def finish(self) -> None:
        """Mark done and wake every waiter (called by the fetcher)."""
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def _when_done(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class KeyState:
    """One key source as readiness, metrics and logs see it.

    `state`: "ready" (keys loaded, the last attempt succeeded), "stale" (the last attempt failed;
    the last good keys still verify), "pending" (no attempt finished yet) or "unavailable" (no
    keys: the provider's tokens are refused with `jwt_keys_unavailable`). `loaded_at`: wall-clock
    time the keys in use were loaded, None without keys.
    """

    issuer: str
    state: str
    loaded_at: float | None
    error: str | None


class _Source:
    """One provider's key set and the thread that keeps it fresh."""

    def __init__(
        self,
        provider: JwtProvider,
        *,
        refresh_seconds: float,
        fetch_timeout: float,
        unknown_kid_cooldown: float,
        unknown_kid_wait: float,
        max_bytes: int,
        on_fetch: OnFetch | None,
        changed: threading.Condition,
    ) -> None:
        self.issuer = provider.issuer
        self._kid_wait = unknown_kid_wait
        self._fetcher = Fetcher(provider, fetch_timeout, max_bytes)
        self._refresh = refresh_seconds
        self._cooldown = unknown_kid_cooldown
        self._on_fetch = on_fetch
        self._changed = changed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._kid_refetch: Refetch | None = None  # the latest, until the fetcher takes it
        self._in_flight: Refetch | None = None  # the one the fetcher is doing (or last did)
        self._last_kid_refetch: float | None = None
        self.key_set: KeySet | None = None
        self.error: str | None = None
        self.loaded_at: float | None = None  # time.time() of the load that gave key_set
        self._thread: threading.Thread | None = None
        # Inline keys never change: parse them now, no thread. A file is read once now (this is
        # start-up or reload, not the request path) and re-read in the background.
        self._static = provider.jwks_json is not None
        self._local = self._static or provider.jwks_file is not None

    def start(self, *, load_now: bool) -> None:
        if self._local and load_now:
            self._attempt("start")
        if self._static:
            if self.key_set is None and not load_now:
                self._attempt("start")  # pure parsing: safe on any thread
            return
        self._thread = threading.Thread(target=self._run, name=f"jwks:{self.issuer}", daemon=True)
        self._thread.start()

    def reload(self) -> None:
        """Read a key file again now (the caller's thread: a local read, like `start`)."""
        self._attempt("reload")

    def refetch(self) -> Refetch | None:
        """An unknown kid arrived: the refetch to wait for, or None when there is none to wait
        for (inline keys; cooldown; the refetch in flight is past its deadline). Starts a
        refetch when the cooldown allows one; never blocks and never fetches on this thread."""
        if self._static:
            return None
        now = time.monotonic()
        with self._lock:
            # Coalesced: every kid that arrives while a refetch is pending waits for that one.
            for pending in (self._kid_refetch, self._in_flight):
                if pending is not None and not pending.done:
                    return pending if now < pending.deadline else None
            if self._last_kid_refetch is not None and now - self._last_kid_refetch < self._cooldown:
                return None
            self._last_kid_refetch = now
            refetch = self._kid_refetch = Refetch(now + self._kid_wait)
        self._wake.set()
        return refetch

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            pending = [r for r in (self._kid_refetch, self._in_flight) if r is not None]
        for refetch in pending:
            refetch.finish()  # nobody waits for a fetch that will not happen

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> KeyState:
        if self.key_set is not None:
            name = "ready" if self.error is None else "stale"
        else:
            name = "pending" if self.error is None else "unavailable"
        return KeyState(self.issuer, name, self.loaded_at, self.error)

    def status(self) -> str:
        state = self.state()
        return state.state if state.error is None else f"{state.state}: {state.error}"

    def _run(self) -> None:
        # A file read synchronously by `start` is not read again at once.
        ok = self.key_set is not None
        trigger: str | None = None if ok else "start"
        failures = 0
        while not self._stop.is_set():
            if trigger is not None:
                ok = self._attempt(trigger)
                failures = 0 if ok else failures + 1
            if self._in_flight is not None:
                self._in_flight.finish()
            # After a failure retry sooner (1, 2, 4 ... s, never more often than the refresh
            # period): a key set that is missing or stale is worth more traffic than a fresh one.
            delay = self._refresh if ok else min(self._refresh, 2.0 ** min(failures - 1, 6))
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                self._in_flight, self._kid_refetch = self._kid_refetch, None
            kid = self._in_flight is not None
            trigger = "unknown_kid" if kid else ("refresh" if ok else "retry")

    def _attempt(self, trigger: str) -> bool:
        started = time.monotonic()
        try:
            key_set = self._fetcher.load()
        except Exception as error:
            message = describe(error)
            with self._changed:
                self.error = message
                self._changed.notify_all()
            log.warning("JWKS for %s: %s (%s)", self.issuer, message, self.status())
            self._report(
                FetchResult(self.issuer, trigger, False, message, 0, (), time.monotonic() - started)
            )
            return False
        with self._changed:
            self.key_set = key_set
            self.error = None
            self.loaded_at = time.time()
            self._changed.notify_all()
        if key_set.skipped:
            log.warning("JWKS for %s: skipped keys: %s", self.issuer, "; ".join(key_set.skipped))
        self._report(
            FetchResult(
                self.issuer,
                trigger,
                True,
                None,
                len(key_set.keys),
                key_set.skipped,
                time.monotonic() - started,
            )
        )
        return True

    def _report(self, result: FetchResult) -> None:
        if self._on_fetch is None:
            return
        try:
            self._on_fetch(self.issuer, result)
        except Exception:
            log.exception("on_fetch callback failed")


class KeyRegistry:
    """The JWKS of every JWT provider of the current policy set.

    Thread-safe. `key_set` and `refetch` are what the request path uses; they only read
    memory and set a flag. `on_fetch(issuer, result)` is called on the fetcher thread after every
    load attempt (for metrics); it must be quick and must not raise.
    """

    def __init__(
        self,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        fetch_timeout: float = FETCH_TIMEOUT_SECONDS,
        unknown_kid_cooldown: float = 30,
        unknown_kid_wait: float = UNKNOWN_KID_WAIT_SECONDS,
        max_jwks_bytes: int = 1024 * 1024,
        on_fetch: OnFetch | None = None,
    ) -> None:
        self._refresh = refresh_seconds
        self._timeout = fetch_timeout
        self._cooldown = unknown_kid_cooldown
        self._kid_wait = unknown_kid_wait
        self._max_bytes = max_jwks_bytes
        self._listeners: list[OnFetch] = [on_fetch] if on_fetch is not None else []
        self._changed = threading.Condition()
        self._sources: dict[SourceKey, _Source] = {}
        # Sources a reload dropped whose threads may still be finishing: close() joins them too.
        self._stopped: list[_Source] = []
        self._closed = False

    def ensure(self, providers: Iterable[JwtProvider]) -> None:
        """Start sources for new providers and stop those no provider uses any more. Called at
        start and after each policy reload; inline and file keys are loaded before it returns.
        Key files of sources that already run are read again: a reload happens because a file
        changed, and that file may be the key file (its content is part of the revision)."""
        wanted = {source_key(p): p for p in providers}
        started: list[_Source] = []
        reread: list[_Source] = []
        with self._changed:
            if self._closed:
                raise RuntimeError("KeyRegistry is closed")
            gone = [key for key in self._sources if key not in wanted]
            stopped = [self._sources.pop(key) for key in gone]
            self._stopped = [s for s in self._stopped if s.running()] + stopped
            for key, provider in wanted.items():
                if key not in self._sources:
                    source = self._new_source(provider)
                    self._sources[key] = source
                    started.append(source)
                elif provider.jwks_file is not None:
                    reread.append(self._sources[key])
        for source in stopped:
            source.close()
        for source in started:
            source.start(load_now=True)
        for source in reread:
            source.reload()

    def key_set(self, provider: JwtProvider) -> KeySet | None:
        """The provider's current keys, or None when none have been loaded (yet). Never blocks.

        A provider `ensure` was never told about gets a source now (inline keys are parsed at
        once; anything else is fetched in the background and is None for this call).
        """
        source = self._sources.get(source_key(provider))
        if source is None:
            source = self._adopt(provider)
            if source is None:
                return None
        return source.key_set

    def refetch(self, provider: JwtProvider) -> Refetch | None:
        """A token named a kid the provider's keys do not have: refetch in the background
        (rate-limited), and return the refetch that may bring it, if there is one to wait for.
        Never blocks."""
        source = self._sources.get(source_key(provider))
        return source.refetch() if source is not None else None

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until every source has a key set; True if they all do."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if all(s.key_set is not None for s in self._sources.values()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def status(self) -> dict[str, str]:
        """issuer -> "ready", "pending", "stale: <error>" (serving the last good keys) or
        "unavailable: <error>" (no keys at all). Several sources of one issuer are joined."""
        result: dict[str, str] = {}
        with self._changed:
            sources = list(self._sources.values())
        for source in sources:
            text = source.status()
            result[source.issuer] = (
                f"{result[source.issuer]}; {text}" if source.issuer in result else text
            )
        return result

    def states(self) -> list[KeyState]:
        """Every key source's state (for readiness and metrics); never blocks on a fetch."""
        with self._changed:
            sources = list(self._sources.values())
        return [source.state() for source in sources]

    def close(self, timeout: float = 5.0) -> None:
        """Stop every fetcher thread (waiting up to `timeout` seconds for each to finish)."""
        with self._changed:
            self._closed = True
            sources = [*self._sources.values(), *self._stopped]
            self._sources.clear()
            self._stopped.clear()
        for source in sources:
            source.close()
        for source in sources:
            source.join(timeout)

    def add_fetch_listener(self, callback: OnFetch) -> None:
        """Also call `callback(issuer, result)` after every load attempt from now on (for a
        metrics module that is built after the registry)."""
        with self._changed:
            self._listeners = [*self._listeners, callback]

    def _notify(self, issuer: str, result: FetchResult) -> None:
        # Copy-on-write list: read without the lock on the fetcher threads.
        for callback in self._listeners:
            try:
                callback(issuer, result)
            except Exception:
                log.exception("JWKS fetch listener failed")

    def _adopt(self, provider: JwtProvider) -> _Source | None:
        key = source_key(provider)
        with self._changed:
            if self._closed:
                return None
            source = self._sources.get(key)
            if source is not None:
                return source
            source = self._new_source(provider)
            self._sources[key] = source
        # load_now=False: on the request path no file is read here; inline keys are parsed.
        source.start(load_now=False)
        return source

    def _new_source(self, provider: JwtProvider) -> _Source:
        return _Source(
            provider,
            refresh_seconds=self._refresh,
            fetch_timeout=self._timeout,
            unknown_kid_cooldown=self._cooldown,
            unknown_kid_wait=self._kid_wait,
            max_bytes=self._max_bytes,
            on_fetch=self._notify,
            changed=self._changed,
        )
