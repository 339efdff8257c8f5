"""Real signing keys and JWTs for tests: RS256/384/512, PS256/384/512, ES256/ES384, EdDSA, HS256.

    key = make_key("ES256", kid="k1")
    token = key.sign(claims("https://id.example.com", now=time.time(), audience="api"))
    jwks_json(key)        # the public JWKS to configure a provider with

Also hostile tokens no honest library makes: `alg: none`, and HS256 "signed" with an RSA
public key's PEM (the classic key-confusion attack).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
)
ALL_ALGORITHMS = (*ASYMMETRIC_ALGORITHMS, "HS256")


@functools.cache
def _rsa_private(index: int) -> rsa.RSAPrivateKey:
    # RSA generation is the slow part of a test run; a small pool of keys is reused across
    # tests (by index), which is fine since each test still gets distinct kids and key sets.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


_rsa_counter = iter(range(1_000_000))


@dataclass(frozen=True)
class SigningKey:
    """A private key with its algorithm and kid, able to sign tokens and publish its JWK."""

    alg: str
    kid: str | None
    private: Any = field(repr=False)

    @property
    def public(self) -> Any:
        """The public key object (for HS256: the secret bytes)."""
        return self.private if isinstance(self.private, bytes) else self.private.public_key()

    def jwk(self, *, include_alg: bool = True) -> dict[str, Any]:
        """The public JWK (for HS256 the `oct` secret), with kid, use and alg."""
        if self.alg.startswith(("RS", "PS")):
            data = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif self.alg.startswith("ES"):
            data = ECAlgorithm.to_jwk(self.public, as_dict=True)
        elif self.alg == "EdDSA":
            data = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            data = HMACAlgorithm.to_jwk(self.private, as_dict=True)
        data = dict(data)
        data["use"] = "sig"
        if include_alg:
            data["alg"] = self.alg
        if self.kid is not None:
            data["kid"] = self.kid
        return data

    def public_pem(self) -> bytes:
        """The public key in PEM (SubjectPublicKeyInfo)."""
        return self.public.public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        payload: dict[str, Any],
        *,
        kid: str | bool | None = True,
        headers: dict[str, Any] | None = None,
        alg: str | None = None,
    ) -> str:
        """A token signed with this key. `kid=True` uses the key's kid, `False`/None omits it,
        a string overrides it."""
        extra: dict[str, Any] = dict(headers or {})
        if kid is True:
            if self.kid is not None:
                extra["kid"] = self.kid
        elif isinstance(kid, str):
            extra["kid"] = kid
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=extra or None)

    def sign_raw(self, payload: dict[str, Any]) -> str:
        """Sign a payload as is, without PyJWT's claim checks (for claims of the wrong type)."""
        headers = {"kid": self.kid} if self.kid is not None else None
        return jwt.api_jws.encode(
            json.dumps(payload).encode(), self.private, algorithm=self.alg, headers=headers
        )


def make_key(alg: str, kid: str | None = None) -> SigningKey:
    """A fresh key for `alg` (RSA keys come from a small reused pool, see `_rsa_private`)."""
    kid = kid if kid is not None else f"{alg.lower()}-{os.urandom(4).hex()}"
    private: Any
    if alg.startswith(("RS", "PS")):
        private = _rsa_private(next(_rsa_counter) % 6)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg.startswith("HS"):
        private = os.urandom(64)
    else:
        raise ValueError(f"no key factory for {alg}")
    return SigningKey(alg, kid, private)


def jwks(*keys: SigningKey, include_alg: bool = True) -> dict[str, Any]:
    """A JWKS document holding the keys' public JWKs."""
    return {"keys": [k.jwk(include_alg=include_alg) for k in keys]}


def jwks_json(*keys: SigningKey, include_alg: bool = True) -> str:
    """`jwks` serialized."""
    return json.dumps(jwks(*keys, include_alg=include_alg))


def claims(
    issuer: str,
    *,
    now: float,
    subject: str | None = "alice",
    audience: str | list[str] | None = None,
    lifetime: float = 300,
    not_before: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A typical payload: iss, sub, iat, exp = now + lifetime, optional aud and nbf."""
    payload: dict[str, Any] = {"iss": issuer, "iat": int(now), "exp": int(now + lifetime)}
    if subject is not None:
        payload["sub"] = subject
    if audience is not None:
        payload["aud"] = audience
    if not_before is not None:
        payload["nbf"] = int(not_before)
    payload.update(extra)
    return payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())


def unsigned_token(payload: dict[str, Any], *, kid: str | None = None) -> str:
    """`alg: none` with an empty signature (RFC 7519 section 6.1)."""
    header: dict[str, Any] = {"alg": "none", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return _segments(header, payload) + "."


def hmac_confusion_token(rsa_key: SigningKey, payload: dict[str, Any], alg: str = "HS256") -> str:
    """HS256 "signed" with the RSA public key's PEM as the HMAC secret, with the RSA key's kid:
    what a verifier that lets the token pick the algorithm would accept."""
    header = {"alg": alg, "typ": "JWT", "kid": rsa_key.kid}
    signing_input = _segments(header, payload)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(rsa_key.public_pem(), signing_input.encode(), digest).digest()
    return signing_input + "." + _b64(signature)


def tamper(token: str) -> str:
    """The same token with its payload changed and the old signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sub"] = "mallory"
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"
