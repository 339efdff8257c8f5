"""JWKS documents -> usable verification keys (pure: no I/O).

A JWKS (RFC 7517 section 5) is parsed key by key with PyJWT's `PyJWK`, so one unusable key (an
unknown `kty`, a curve we do not support, a key meant for encryption) is skipped and reported
instead of failing the whole set: an IdP that adds a new kind of key must not lock everybody out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

__all__ = ["Jwk", "JwksError", "KeySet", "parse_jwks"]


class JwksError(ValueError):
    """A JWKS document that gives no usable key at all."""


@dataclass(frozen=True, slots=True)
class Jwk:
    """One verification key. `key` is a `cryptography` public key (or bytes for `oct`)."""

    kid: str | None
    kty: str
    crv: str | None
    # The JWK's own `alg` member (RFC 7517 section 4.4): when given, the key is used with that
    # algorithm only.
    alg: str | None
    key: Any = field(repr=False, compare=False)


_NO_KEYS: Mapping[str, Jwk] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class KeySet:
    """The keys of one provider at one moment. Compared by identity: a new fetch gives a new
    KeySet, which is how the verified-token cache notices a key rotation."""

    keys: tuple[Jwk, ...]
    by_kid: Mapping[str, Jwk] = field(default_factory=lambda: _NO_KEYS)
    # Why each skipped key was skipped, for status and logs.
    skipped: tuple[str, ...] = ()

    def find(self, kid: str | None) -> Jwk | None:
        """The key for `kid`; without a kid, the only key (RFC 7515 section 4.1.4 makes kid
        optional; with several keys and no kid there is no safe choice)."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return self.by_kid.get(kid)


def parse_jwks(document: bytes | str | Mapping[str, Any]) -> KeySet:
    """Parse a JWKS document. Raises JwksError when it is not a JWKS or has no usable key."""
    data: Any = document
    if isinstance(document, (bytes, str)):
        try:
            data = json.loads(document)
        except (ValueError, RecursionError) as error:
            raise JwksError(f"not JSON: {error}") from error
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise JwksError('not a JWKS: no "keys" list')
    keys: list[Jwk] = []
    skipped: list[str] = []
    for index, entry in enumerate(data["keys"]):
        try:
            keys.append(_one_key(entry))
        except (PyJWTError, ValueError, TypeError) as error:
            label = entry.get("kid", f"#{index}") if isinstance(entry, Mapping) else f"#{index}"
            skipped.append(f"{label}: {error}")
    if not keys:
        detail = "; ".join(skipped) if skipped else "empty"
        raise JwksError(f"no usable key ({detail})")
    by_kid: dict[str, Jwk] = {}
    for key in keys:
        # The first key wins on a duplicate kid; later duplicates are reported, not used.
        if key.kid is not None:
            if key.kid in by_kid:
                skipped.append(f"{key.kid}: duplicate kid ignored")
            else:
                by_kid[key.kid] = key
    return KeySet(tuple(keys), MappingProxyType(by_kid), tuple(skipped))


def _one_key(entry: object) -> Jwk:
    if not isinstance(entry, Mapping):
        raise ValueError("not a JSON object")
    # RFC 7517 section 4.2: "use": "enc" keys are for encryption, not for verifying signatures.
    use = entry.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use is {use!r}, not 'sig'")
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    alg = entry.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ValueError("alg is not a string")
    if alg == "none":
        raise ValueError("alg none")
    parsed = PyJWK(dict(entry))
    key: Any = parsed.key
    # A JWKS that (wrongly) publishes a private key still only gives us its public half.
    public_key = getattr(key, "public_key", None)
    if callable(public_key) and not isinstance(key, (bytes, str)):
        key = public_key()
    crv = entry.get("crv")
    return Jwk(
        kid=kid,
        kty=str(entry.get("kty")),
        crv=crv if isinstance(crv, str) else None,
        alg=alg,
        key=key,
    )
