"""OAuth 2.0 token introspection (RFC 7662): the client, the answer cache, one request per token.

`Introspector.answer(provider, token, wait)` is what the introspection source asks. An answer
comes from the cache (keyed by the SHA-256 of the token: the token itself is never stored or
logged), from a request already in flight for the same token (concurrent checks of one new token
make one request), or from a new request, sent on a pool thread of this module. The check waits
for it as `KeyWait` says: on its own thread (the gRPC door, bounded by the provider's `timeout`),
or by raising `KeysPending` so an event loop awaits it (the HTTP door) and asks again.

Every way the endpoint can fail (refused, reset, TLS, slower than `timeout`, a status other than
200, a body that is not a JSON object with a boolean `active`, larger than MAX_ANSWER_BYTES, a
redirect) is one `IntrospectionUnavailable` (503): never an allow, never a 401 that would tell
the client its token is bad. Failures are remembered for FAILURE_TTL seconds, so an endpoint that
is down gets one request per token per second at most, not one per check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authz.errors import IntrospectionUnavailable
from authz.identity.cache import BoundedCache, deep_bytes
from authz.identity.jwt import KeysPending, KeyWait
from authz.identity.keys import Refetch
from authz.policy.language.spec import IntrospectionProvider

__all__ = [
    "FAILURE_TTL",
    "MAX_ANSWER_BYTES",
    "MAX_IN_FLIGHT",
    "Answer",
    "Introspector",
    "token_digest",
]

MAX_ANSWER_BYTES = 64 * 1024
FAILURE_TTL = 1.0
_POOL_THREADS = 32
# Answer caches are per provider (its bounds are its own); a reload that changes a provider
# makes a new one, so the oldest caches beyond this many are dropped.
_MAX_PROVIDER_CACHES = 64
# A check that waited for a lookup with KeyWait.DEFER asks again with NEVER right after: the
# answer it waited for is kept this long for it, even one the cache does not keep (an inactive
# answer with inactive_ttl 0, an active one already past its exp).
_SETTLED_SECONDS = 5.0
# Lookups waiting for or talking to an endpoint: a flood of made-up tokens gets 503 beyond this
# instead of a queue that grows without bound (each miss holds its token until it is sent).
MAX_IN_FLIGHT = 1024

# What the metrics hear: (provider name, outcome, seconds) per request to an endpoint, where
# outcome is active, inactive or error; and (provider name) per cache hit.
RequestListener = Callable[[str, str, float], None]
HitListener = Callable[[str], None]


def token_digest(token: str) -> str:
    """The cache key of a token: its SHA-256, hex. The token itself is never kept."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    """What the endpoint said: `active`, and the other members of an active answer (`sub`,
    `iss`, `scope`, `exp`, `cnf`, extensions), or `failure` (why it could not say)."""

    active: bool
    claims: Mapping[str, Any]
    until: float  # wall clock: the cache drops the answer then
    failure: str = ""
    cached: bool = False


class _Lookup(Refetch):
    """One request to an endpoint in flight; checks of the same token wait for it."""

    answer: Answer | None = None


class _Unusable(Exception):
    """The endpoint's answer cannot be used (translated to IntrospectionUnavailable)."""


class Introspector:
    """The introspection client of a service. Thread-safe.

    `ssl_context`: the TLS trust for endpoints (default: the system's, which honours
    SSL_CERT_FILE). `environ`: where `client_secret_env` is read."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] = os.environ,
        on_request: RequestListener | None = None,
        on_hit: HitListener | None = None,
    ) -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._ssl), _NoRedirects
        )
        self._environ = environ
        self._on_request = on_request
        self._on_hit = on_hit
        self._lock = threading.Lock()
        self._caches: dict[IntrospectionProvider, BoundedCache[str, Answer]] = {}
        self._inflight: dict[tuple[IntrospectionProvider, str], _Lookup] = {}
        self._settled: BoundedCache[tuple[IntrospectionProvider, str], Answer] = BoundedCache(
            entries=4096,
            budget=16 * 1024 * 1024,
            max_entry=MAX_ANSWER_BYTES * 2,
            ttu=lambda _key, _answer, now: now + _SETTLED_SECONDS,
        )
        self._pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="introspection")
        # provider name -> why its last request failed (cleared by the next good answer).
        self._failing: dict[str, str] = {}
        self.requests = 0
        self.cache_hits = 0

    def answer(self, provider: IntrospectionProvider, token: str, wait: KeyWait) -> Answer:
        """The endpoint's answer for `token`. Raises IntrospectionUnavailable, or KeysPending
        with `wait=KeyWait.DEFER` while the request is in flight."""
        digest = token_digest(token)
        cache = self._cache(provider)
        hit = cache.get(digest)
        if hit is not None:
            self.cache_hits += 1
            if self._on_hit is not None:
                self._on_hit(provider.name)
            return _usable(hit.value, cached=True)
        key = (provider, digest)
        if wait is KeyWait.NEVER:
            settled = self._settled.get(key)
            if settled is not None:
                return _usable(settled.value, cached=False)
        with self._lock:
            lookup = self._inflight.get(key)
            if lookup is None and len(self._inflight) >= MAX_IN_FLIGHT:
                self._failing[provider.name] = "too many lookups in flight"
                raise IntrospectionUnavailable("too many introspection lookups in flight")
            if lookup is None:
                lookup = _Lookup(time.monotonic() + provider.timeout)
                self._inflight[key] = lookup
                self._pool.submit(self._run, provider, token, key, lookup)
        if not lookup.done:
            if wait is KeyWait.DEFER:
                raise KeysPending(lookup)
            if wait is KeyWait.BLOCK:
                lookup.wait()
        if lookup.answer is None:
            with self._lock:
                self._failing[provider.name] = f"no answer within {provider.timeout:g} s"
            raise IntrospectionUnavailable(
                f"introspection provider {provider.name!r} did not answer in time"
            )
        return _usable(lookup.answer, cached=False)

    def status(self) -> dict[str, str]:
        """Providers whose last request failed, and why (the readiness detail)."""
        with self._lock:
            return dict(self._failing)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _cache(self, provider: IntrospectionProvider) -> BoundedCache[str, Answer]:
        with self._lock:
            cache = self._caches.get(provider)
            if cache is None:
                while len(self._caches) >= _MAX_PROVIDER_CACHES:
                    del self._caches[next(iter(self._caches))]
                cache = BoundedCache(
                    entries=provider.cache_entries,
                    budget=provider.cache_bytes,
                    max_entry=MAX_ANSWER_BYTES * 2,
                    ttu=lambda _key, answer, _now: answer.until,
                    timer=time.time,
                )
                self._caches[provider] = cache
            return cache

    def _run(
        self,
        provider: IntrospectionProvider,
        token: str,
        key: tuple[IntrospectionProvider, str],
        lookup: _Lookup,
    ) -> None:
        started = time.monotonic()
        try:
            answer = self._ask(provider, token, lookup.deadline)
            outcome = "active" if answer.active else "inactive"
        except Exception as error:  # every failure is an outage, whatever raised it
            answer = Answer(False, MappingProxyType({}), time.time() + FAILURE_TTL, _why(error))
            outcome = "error"
        self.requests += 1
        if self._on_request is not None:
            self._on_request(provider.name, outcome, time.monotonic() - started)
        size = len(key[1]) + deep_bytes(answer.claims, MAX_ANSWER_BYTES)
        self._cache(provider).put(key[1], answer, size)
        self._settled.put(key, answer, size)
        with self._lock:
            if answer.failure:
                self._failing[provider.name] = answer.failure
            else:
                self._failing.pop(provider.name, None)
            self._inflight.pop(key, None)
        lookup.answer = answer
        lookup.finish()

    def _ask(self, provider: IntrospectionProvider, token: str, deadline: float) -> Answer:
        """POST the token (RFC 7662 section 2.1) with client_secret_basic (RFC 6749 2.3.1)."""
        if time.monotonic() >= deadline:
            raise _Unusable("waited for a pool thread past the timeout")
        secret = self._secret(provider)
        quote = urllib.parse.quote
        basic = f"{quote(provider.client_id, safe='')}:{quote(secret, safe='')}"
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})
        request = urllib.request.Request(
            provider.endpoint,
            data=body.encode(),
            method="POST",
            headers={
                "Authorization": "Basic " + base64.b64encode(basic.encode()).decode("ascii"),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Unusable("no time left")
        with self._opener.open(request, timeout=remaining) as response:
            if response.status != 200:
                raise _Unusable(f"HTTP {response.status}")
            data = response.read(MAX_ANSWER_BYTES + 1)
        if len(data) > MAX_ANSWER_BYTES:
            raise _Unusable(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        if time.monotonic() > deadline:
            raise _Unusable(f"answer took longer than {provider.timeout:g} s")
        return _parse(data, provider, time.time())

    def _secret(self, provider: IntrospectionProvider) -> str:
        # Read on every request (a miss is a network round trip anyway): a rotated secret file
        # is picked up without a reload.
        if provider.secret_file is not None:
            try:
                with open(provider.secret_file, encoding="utf-8") as handle:
                    secret = handle.read(4096).strip()
            except OSError as error:
                raise _Unusable(f"client secret file: {error.strerror}") from error
        else:
            secret = self._environ.get(provider.secret_env or "", "").strip()
        if not secret:
            raise _Unusable("no client secret")
        return secret


def _parse(data: bytes, provider: IntrospectionProvider, now: float) -> Answer:
    """RFC 7662 section 2.2: a JSON object whose `active` is a boolean."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise _Unusable("the answer is not JSON") from error
    if not isinstance(value, dict) or not isinstance(value.get("active"), bool):
        raise _Unusable("the answer has no boolean active")
    if not value["active"]:
        # Section 2.2: an inactive answer SHOULD hold nothing else; nothing else is used.
        return Answer(False, MappingProxyType({}), now + provider.inactive_ttl)
    claims = {k: v for k, v in value.items() if k != "active"}
    until = now + provider.cache_ttl
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        until = min(until, float(exp))
    return Answer(True, MappingProxyType(claims), until)


def _usable(answer: Answer, *, cached: bool) -> Answer:
    if answer.failure:
        raise IntrospectionUnavailable(f"the introspection endpoint failed: {answer.failure}")
    return Answer(answer.active, answer.claims, answer.until, cached=cached)


def _why(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return f"request failed: {error.reason}"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, _Unusable):
        return str(error)
    return type(error).__name__


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """An endpoint that redirects is misconfigured: the token and secret stay where they were
    sent (a redirect is answered as an HTTPError, an outage)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
