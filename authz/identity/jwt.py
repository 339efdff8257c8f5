"""End-user identity: verifying a JWT with PyJWT, and the verified-token cache.

Order of checks (RFC 7519 section 7.2, RFC 8725): size bound; structure (header and payload
decoded without trusting them); the provider chosen by the *unverified* `iss`; the algorithm
against the provider's allow-list; the key by `kid`, and the key's type against the algorithm;
the signature; then the claims (`exp`, `nbf` with 60 s of skew against the `now` passed in,
`aud`, `sub`). Nothing about the claims is reported before the signature verified.

Every PyJWT exception is translated here, and only here, into TokenRejected with a stable
reason code (`jwt_*`), chained with `raise ... from`. Messages are short, fixed texts, safe for
`WWW-Authenticate: Bearer error="invalid_token", error_description="..."`.

Tokens without `sub` are refused (`jwt_missing_claim`): the request principal is `<iss>/<sub>`,
and an `iss/` principal would match patterns like `https://id.example.com/*`. Tokens without
`exp` are accepted, as Envoy's jwt_authn and Istio accept them. The `iss` and `sub` of an
accepted token are sent upstream in headers (the request principal), so a token whose `iss` or
`sub` is not a valid header value (`is_header_value`) is refused (`jwt_invalid_claims`) rather
than allowed with a header Envoy would refuse (issue 10.5).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from jwt.api_jws import PyJWS
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWTError,
)

from authz.errors import TokenRejected
from authz.identity.cache import BoundedCache, deep_bytes, text_bytes
from authz.identity.header_value import is_header_value
from authz.identity.jwks import Jwk, KeySet
from authz.identity.keys import Refetch
from authz.model import FROM_CACHE, EndUser, TokenCheck
from authz.policy.language.spec import JwtProvider, TokenLocation

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEFAULT_ALGORITHMS",
    "MAX_CACHED_TOKEN_BYTES",
    "MAX_TOKEN_BYTES",
    "TOKEN_CACHE_BYTES",
    "JwtVerifier",
    "KeyLookup",
    "KeyWait",
    "KeysPending",
    "check_claims",
    "choose_provider",
]

DEFAULT_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
CLOCK_SKEW_SECONDS = 60.0
MAX_TOKEN_BYTES = 16 * 1024
# The verified-token cache: an entry (token and decoded claims) over MAX_CACHED_TOKEN_BYTES is
# never stored, and all entries together stay within TOKEN_CACHE_BYTES (issue 10.2).
MAX_CACHED_TOKEN_BYTES = 64 * 1024
TOKEN_CACHE_BYTES = 32 * 1024 * 1024

# Which key types may verify which algorithm (RFC 7518 sections 3.2-3.5, RFC 8037 section 3.1).
# Checking this ourselves is what stops key confusion: an RSA public key is never an HMAC secret.
_KEY_FITS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "HS256": ("oct", None),
    "HS384": ("oct", None),
    "HS512": ("oct", None),
}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})

# enforce_minimum_key_length: a too-short RSA or HMAC key fails instead of printing a warning
# on the request path.
_JWS = PyJWS(options={"verify_signature": True, "enforce_minimum_key_length": True})


class KeyLookup(Protocol):
    """What the verifier needs from a key registry (`authz.identity.keys.KeyRegistry`)."""

    def key_set(self, provider: JwtProvider) -> KeySet | None:
        """The provider's current keys; never blocks."""

    def refetch(self, provider: JwtProvider) -> Refetch | None:
        """An unknown kid arrived: ask for a background refetch (rate-limited) and return the
        one worth waiting for, if any; never blocks."""


class KeyWait(enum.Enum):
    """What a check does when its token's kid is unknown and a refetch may bring it."""

    BLOCK = "block"
    """Wait on this thread (bounded by the refetch's deadline): for the gRPC server's pool, the
    CLI and tests."""
    DEFER = "defer"
    """Raise KeysPending: the caller (an event loop) awaits `refetch.wait_async()` and asks
    again with NEVER, so the loop never blocks."""
    NEVER = "never"
    """Decide with the keys there are now."""


class KeysPending(Exception):
    """Not a decision: the check must wait for `refetch` (see KeyWait.DEFER), then ask again.
    Deliberately not an AuthzError, so nothing can turn it into a deny by accident."""

    def __init__(self, refetch: Refetch) -> None:
        super().__init__("waiting for a JWKS refetch")
        self.refetch = refetch


def _reject(reason: str, message: str) -> TokenRejected:
    return TokenRejected(message, reason=reason)


@dataclass(frozen=True, slots=True)
class _Cached:
    user: EndUser
    provider: JwtProvider
    index: int  # of `provider` in the cache key's providers
    key_set: KeySet
    exp: float | None
    nbf: float | None


class JwtVerifier:
    """Verifies tokens for a host's providers and caches the results.

    The cache is keyed by the raw token and the host's providers (the provider that verified
    the token is in the entry), so a hit costs one dict lookup: the token is not even decoded.
    It is bounded in entries and in bytes (`cache_bytes`; an entry over
    `MAX_CACHED_TOKEN_BYTES`, token and claims, is never stored); an entry lives
    at most `cache_ttl` seconds and never past the token's `exp` (plus skew). An entry is used
    only while the provider's key set is the very one it was verified with, and
    `exp`/`nbf` are re-checked against `now` on every hit. So a key removed from the JWKS stops
    accepting tokens at the next JWKS refresh; the remaining trade-off is that a token verified
    once is not re-verified until the key set changes or `cache_ttl` passes.
    """

    def __init__(
        self,
        keys: KeyLookup,
        *,
        cache_size: int = 10_000,
        cache_bytes: int = TOKEN_CACHE_BYTES,
        cache_ttl: float = 300.0,
    ) -> None:
        self._keys = keys
        ttl = cache_ttl

        def time_to_use(_key: object, entry: _Cached, now: float) -> float:
            # Wall clock on purpose: `exp` is wall-clock time. `now` given to `verify` is
            # still what decides validity on a hit; this only drops dead entries early.
            limit = now + ttl
            return limit if entry.exp is None else min(limit, entry.exp + CLOCK_SKEW_SECONDS)

        self._cache: BoundedCache[tuple[str, tuple[JwtProvider, ...]], _Cached] = BoundedCache(
            entries=cache_size,
            budget=cache_bytes,
            max_entry=MAX_CACHED_TOKEN_BYTES,
            ttu=time_to_use,
            timer=time.time,
        )
        # Counters for metrics and tests: signatures actually checked, cache hits.
        self.signature_checks = 0
        self.cache_hits = 0

    def verify(
        self,
        token: str,
        providers: Sequence[JwtProvider],
        now: float,
        *,
        found_in: frozenset[TokenLocation] | None = None,
        wait: KeyWait = KeyWait.BLOCK,
    ) -> tuple[EndUser, int]:
        """Verify `token` with the provider its `iss` names: the user, and that provider's index
        in `providers`. Raises TokenRejected.

        `found_in`: the locations the token was found in; a provider is only considered when
        it reads tokens from one of them (as Envoy's per-provider `from_*` settings do).
        `wait`: what to do when the kid is unknown and a refetch may bring it (KeyWait); with
        DEFER this raises KeysPending instead of waiting.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise _reject("jwt_malformed", "the token is too large")
        cache_key = (token, tuple(providers))
        cached = self._cache.get(cache_key)
        if cached is not None:
            hit = self._from_cache(cached.value, now, found_in)
            if hit is not None:
                return hit, cached.value.index
        # A cold verification: its time goes to the check's trace, whatever the outcome.
        started = time.time_ns()
        try:
            user, index = self._verify(token, cache_key, now, found_in, wait)
        except TokenRejected as error:
            error.token_check = TokenCheck(False, started, time.time_ns() - started)
            raise
        check = TokenCheck(False, started, time.time_ns() - started)
        return dataclasses.replace(user, token_check=check), index

    def _verify(
        self,
        token: str,
        cache_key: tuple[str, tuple[JwtProvider, ...]],
        now: float,
        found_in: frozenset[TokenLocation] | None,
        wait: KeyWait,
    ) -> tuple[EndUser, int]:
        providers = cache_key[1]
        header, payload = _parse_unverified(token)
        index = choose_provider(payload, providers, found_in)
        provider = providers[index]
        key_set = self._keys.key_set(provider)

        alg = header.get("alg")
        allowed = (
            frozenset(provider.algorithms) - {"none"} if provider.algorithms else DEFAULT_ALGORITHMS
        )
        if not isinstance(alg, str) or alg not in allowed:
            # RFC 8725 section 3.1: the algorithm comes from our configuration, never from the
            # token; `none` is never in the list.
            raise _reject("jwt_alg_not_allowed", "the token's algorithm is not allowed")
        if key_set is None:
            raise _reject("jwt_keys_unavailable", "the issuer's keys are not available")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _reject("jwt_malformed", "the token's kid is not a string")
        if kid is None and (provider.jwks_uri is not None or provider.discovery):
            # A remote set may hold one key now and two after the next fetch: whether a token
            # without kid is accepted must not depend on when it arrives (nor differ from the
            # export, where Envoy cannot count the keys it fetched).
            raise _reject("jwt_unknown_kid", "a token for a remote key set needs a kid")
        key = key_set.find(kid)
        if key is None:
            key_set, key = self._after_refetch(provider, kid, wait)
        _check_key_fits(key, alg)

        self.signature_checks += 1
        try:
            _JWS.decode_complete(token, key=key.key, algorithms=[alg])
        except InvalidSignatureError as error:
            raise _reject("jwt_bad_signature", "the token's signature is invalid") from error
        except InvalidAlgorithmError as error:
            raise _reject("jwt_alg_not_allowed", "the token's algorithm is not allowed") from error
        except InvalidKeyError as error:
            raise _reject("jwt_bad_signature", "the token's key is unusable") from error
        except DecodeError as error:
            raise _reject("jwt_malformed", "the token is malformed") from error
        except (PyJWTError, ValueError, TypeError) as error:
            raise _reject("jwt_bad_signature", "the token could not be verified") from error

        user = check_claims(payload, provider, now)
        exp, nbf = _number(payload, "exp"), _number(payload, "nbf")
        # The claims are the token's payload decoded: weighed as objects, since a small JSON
        # text (`[[],[],...]`) can decode to many times its size.
        size = text_bytes(token) + deep_bytes(payload, MAX_CACHED_TOKEN_BYTES)
        cached = dataclasses.replace(user, token_check=FROM_CACHE)
        self._cache.put(cache_key, _Cached(cached, provider, index, key_set, exp, nbf), size)
        return user, index

    def _after_refetch(
        self, provider: JwtProvider, kid: str | None, wait: KeyWait
    ) -> tuple[KeySet, Jwk]:
        """The key for `kid` once the refetch an unknown kid triggers is done (maybe the IdP
        rotated keys: the first token signed by a new key is accepted), or jwt_unknown_kid.
        A flood of made-up kids costs one fetch per cooldown: without a refetch to wait for
        (cooldown, or the one in flight is past its deadline) the answer is immediate."""
        refetch = self._keys.refetch(provider)
        if refetch is not None and not refetch.done:
            if wait is KeyWait.DEFER:
                raise KeysPending(refetch)
            if wait is KeyWait.BLOCK:
                refetch.wait()
        # Read again: new keys if the refetch finished (while waiting, or just before).
        key_set = self._keys.key_set(provider)
        key = key_set.find(kid) if key_set is not None else None
        if key_set is None or key is None:
            raise _reject("jwt_unknown_kid", "the token's key is unknown")
        return key_set, key

    def _from_cache(
        self,
        cached: _Cached,
        now: float,
        found_in: frozenset[TokenLocation] | None,
    ) -> EndUser | None:
        """The cached user, or None when the entry cannot be used (verify in full instead)."""
        provider = cached.provider
        if self._keys.key_set(provider) is not cached.key_set:
            return None  # the keys changed since: a removed key must stop working
        if found_in is not None and not found_in.intersection(provider.locations):
            return None  # found somewhere else this time: let the full path judge
        # Time claims depend on `now`: checked on every hit, so an expired token is refused
        # even while its entry is still in the cache.
        _check_times(cached.exp, cached.nbf, now)
        self.cache_hits += 1
        return cached.user


def check_claims(
    claims: Mapping[str, Any],
    provider: JwtProvider,
    now: float,
) -> EndUser:
    """Check the claims of a token whose signature is verified (by us, or by Envoy's
    jwt_authn) and build the EndUser. Raises TokenRejected."""
    iss = claims.get("iss")
    if iss != provider.issuer:
        raise _reject("jwt_bad_issuer", "the token's issuer is not accepted")
    _check_times(_number(claims, "exp"), _number(claims, "nbf"), now)
    if provider.audiences:
        aud = claims.get("aud")
        # RFC 7519 section 4.1.3: aud is a string or an array of strings.
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not any(
            isinstance(v, str) and v in provider.audiences for v in values
        ):
            raise _reject("jwt_bad_audience", "the token's audience is not accepted")
    sub = claims.get("sub")
    if sub is None or sub == "":
        raise _reject("jwt_missing_claim", "the token has no subject")
    if not isinstance(sub, str):
        raise _reject("jwt_malformed", "the token's subject is not a string")
    if not (is_header_value(iss) and is_header_value(sub)):
        # Both go upstream in the request principal header: refused here, with a reason in the
        # decision log, instead of an allow that Envoy then answers with 503.
        raise _reject("jwt_invalid_claims", "the token's issuer or subject is not header-safe")
    return EndUser(
        issuer=provider.issuer,
        subject=sub,
        claims=MappingProxyType(dict(claims)),
    )


def _parse_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        decoded = _JWS.decode_complete(token, options={"verify_signature": False})
        payload = json.loads(decoded["payload"])
    except (PyJWTError, ValueError, TypeError, RecursionError) as error:
        raise _reject("jwt_malformed", "the token is malformed") from error
    header = decoded["header"]
    if not isinstance(payload, dict) or not isinstance(header, dict):
        raise _reject("jwt_malformed", "the token is malformed")
    return header, payload


def choose_provider(
    payload: Mapping[str, Any],
    providers: Sequence[JwtProvider],
    found_in: frozenset[TokenLocation] | None,
) -> int:
    """The index in `providers` of the one to verify with."""
    iss = payload.get("iss")
    if iss is None:
        raise _reject("jwt_missing_claim", "the token has no issuer")
    if not isinstance(iss, str):
        raise _reject("jwt_malformed", "the token's issuer is not a string")
    matching = [i for i, p in enumerate(providers) if p.issuer == iss]
    if not matching:
        raise _reject("jwt_unknown_issuer", "the token's issuer is not accepted here")
    if found_in is not None:
        matching = [i for i in matching if found_in.intersection(providers[i].locations)]
        if not matching:
            raise _reject("jwt_bad_issuer", "the token's issuer does not use this location")
    return matching[0]


def _check_key_fits(key: Jwk, alg: str) -> None:
    # RFC 7517 section 4.4: a key that names its algorithm is used with that one only.
    if key.alg is not None and key.alg != alg:
        raise _reject("jwt_alg_not_allowed", "the token's algorithm does not fit its key")
    if alg == "EdDSA":
        fits = key.kty == "OKP" and key.crv in _OKP_CURVES
    else:
        kty, crv = _KEY_FITS.get(alg, ("", None))
        fits = key.kty == kty and (crv is None or key.crv == crv)
    if not fits:
        raise _reject("jwt_alg_not_allowed", "the token's algorithm does not fit its key")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # RFC 7519 section 2, NumericDate: a JSON number. A bool is not one, nor a string.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _reject("jwt_malformed", f"the token's {name} is not a number")
    try:
        number = float(value)
    except OverflowError as error:
        raise _reject("jwt_malformed", f"the token's {name} is out of range") from error
    # Python's json accepts NaN and Infinity; neither is a date (NaN would never expire).
    if not math.isfinite(number):
        raise _reject("jwt_malformed", f"the token's {name} is out of range")
    return number


def _check_times(exp: float | None, nbf: float | None, now: float) -> None:
    # RFC 7519 section 4.1.4: the token must not be accepted "on or after" exp; 4.1.5: not
    # "before" nbf. Both with the allowed skew.
    if exp is not None and now >= exp + CLOCK_SKEW_SECONDS:
        raise _reject("jwt_expired", "the token has expired")
    if nbf is not None and now + CLOCK_SKEW_SECONDS < nbf:
        raise _reject("jwt_not_yet_valid", "the token is not valid yet")
