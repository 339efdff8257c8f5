"""The token-trick corpus: every known way to sneak a JWT past a verifier, each denied.

Every case goes through the real `ServiceResolver` (real keys, a real `KeyRegistry`) as an
`Authorization: Bearer` header and must raise `TokenRejected` with status 401 and the reason
named in the table; nothing else may escape. Sources for the attacks: RFC 8725 (JWT BCP),
RFC 7515 section 4.1.11 (`crit`), PortSwigger's "JWT attacks" (alg none, key confusion, `jku`,
`jwk` and `kid` injection), CVE-2022-21449 ("psychic signatures", ECDSA r = s = 0).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.config import Settings
from authz.errors import TokenRejected
from authz.identity import MAX_TOKEN_BYTES, KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Identity, Request
from authz.policy.language.spec import Authentication, JwtProvider, TokenLocation
from tests.hostile._hyp import HOSTILE
from tests.hostile.forge import b64, forge
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, claims, hmac_confusion_token, jwks_json, make_key

ISS = "https://id.example.com"
AUD = "shop-api"
NOW = 1_800_000_000.0


@dataclass
class Ctx:
    """The trusted keys (published in the provider's JWKS), an attacker's key and the attacker's
    own JWKS server (which must never be asked for anything)."""

    rsa: SigningKey
    ec: SigningKey
    attacker: SigningKey
    evil: JwksServer

    def good(self, **extra: Any) -> dict[str, Any]:
        return claims(ISS, now=NOW, audience=AUD, **extra)

    def rs_header(self, **extra: Any) -> dict[str, Any]:
        return {"alg": "RS256", "typ": "JWT", "kid": self.rsa.kid, **extra}


class Verifier:
    def __init__(self, registry: KeyRegistry, provider: JwtProvider) -> None:
        self.provider = provider
        self.auth = Authentication(jwt_providers=(provider,))
        self.resolver = ServiceResolver(Settings(), registry)

    def resolve(self, token: str, now: float = NOW) -> Identity:
        request = Request(
            method="GET",
            path="/",
            host="shop.example.com",
            headers={"authorization": f"Bearer {token}"},
        )
        return self.resolver.resolve(request, self.auth, now)

    def reason(self, token: str) -> str:
        """The reason the token is refused; fails when it is accepted or anything else escapes."""
        try:
            identity = self.resolve(token)
        except TokenRejected as error:
            assert error.status == 401
            assert error.reason.startswith("jwt_")
            # Safe for WWW-Authenticate error_description (RFC 6750 section 3).
            assert all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in str(error))
            return error.reason
        pytest.fail(f"token accepted: {identity}")


@pytest.fixture(scope="module")
def ctx() -> Iterator[Ctx]:
    attacker = make_key("RS256", kid="attacker")
    with JwksServer(keys=[attacker]) as evil:
        yield Ctx(make_key("RS256", kid="rsa-1"), make_key("ES256", kid="ec-1"), attacker, evil)
        # jku / x5u / jwk headers must never make us fetch or trust anything.
        assert evil.fetches == 0 and evil.discovery_fetches == 0


@pytest.fixture(scope="module")
def verifier(ctx: Ctx) -> Iterator[Verifier]:
    registry = KeyRegistry()
    provider = JwtProvider(issuer=ISS, audiences=(AUD,), jwks_json=jwks_json(ctx.rsa, ctx.ec))
    registry.ensure([provider])
    yield Verifier(registry, provider)
    registry.close()


def test_the_honest_token_is_accepted(ctx: Ctx, verifier: Verifier) -> None:
    """The baseline: without it every 'denied' below could be a broken setup."""
    identity = verifier.resolve(ctx.rsa.sign(ctx.good()))
    assert identity.user is not None and identity.user.principal == f"{ISS}/alice"
    identity = verifier.resolve(forge(ctx.rs_header(), ctx.good(), key=ctx.rsa))
    assert identity.user is not None


def _nested(depth: int) -> str:
    exp, opening, closing = int(NOW + 300), "[" * depth, "]" * depth
    return (
        f'{{"iss": "{ISS}", "aud": "{AUD}", "sub": "alice", "exp": {exp}, '
        f'"deep": {opening}{closing}}}'
    )


def _ecdsa_zero(ctx: Ctx) -> str:
    # CVE-2022-21449: r = s = 0 verified as valid by Java 15-18's ECDSA.
    return forge({"alg": "ES256", "kid": ctx.ec.kid}, ctx.good(), signature=bytes(64))


def _der_es256(ctx: Ctx) -> str:
    # ES256 signatures are raw r||s (RFC 7518 section 3.4); a DER-encoded one is not valid.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    header = {"alg": "ES256", "kid": ctx.ec.kid}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(ctx.good()).encode())
    der = ctx.ec.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    return signing_input + "." + b64(der)


Case = tuple[str, str, Callable[[Ctx], str], str]

# (attack, what it stands for, token, expected reason)
CASES: list[Case] = [
    # -- alg: none (RFC 8725 section 2.1), every spelling --------------------------------
    (
        "alg-none",
        "unsigned token accepted as valid",
        lambda c: forge({"alg": "none", "typ": "JWT"}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-None",
        "case-insensitive alg check",
        lambda c: forge({"alg": "None"}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-NONE",
        "case-insensitive alg check",
        lambda c: forge({"alg": "NONE"}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-nOnE",
        "case-insensitive alg check",
        lambda c: forge({"alg": "nOnE"}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-none-with-kid",
        "none with a trusted key's kid",
        lambda c: forge({"alg": "none", "kid": c.rsa.kid}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-none-with-signature",
        "none with a leftover signature",
        lambda c: forge({"alg": "none"}, c.good(), signature=b"sig"),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-empty",
        "empty alg",
        lambda c: forge({"alg": "", "kid": c.rsa.kid}, c.good(), key=None),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-missing",
        "no alg at all",
        lambda c: forge({"kid": c.rsa.kid}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-list",
        "alg as a JSON array",
        lambda c: forge({"alg": ["RS256"], "kid": c.rsa.kid}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-lowercase",
        "rs256 for RS256",
        lambda c: forge({"alg": "rs256", "kid": c.rsa.kid}, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "alg-padded",
        "'RS256 ' with a space",
        lambda c: forge({"alg": "RS256 ", "kid": c.rsa.kid}, c.good()),
        "jwt_alg_not_allowed",
    ),
    # -- key confusion (CVE-2016-10555 and friends) ----------------------------------------
    (
        "hs256-with-rsa-public-key",
        "RSA public key PEM used as the HMAC secret",
        lambda c: hmac_confusion_token(c.rsa, c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "hs384-with-rsa-public-key",
        "the same with HS384",
        lambda c: hmac_confusion_token(c.rsa, c.good(), "HS384"),
        "jwt_alg_not_allowed",
    ),
    (
        "hs512-with-rsa-public-key",
        "the same with HS512",
        lambda c: hmac_confusion_token(c.rsa, c.good(), "HS512"),
        "jwt_alg_not_allowed",
    ),
    (
        "ps256-on-rs256-key",
        "another RSA scheme than the key names",
        lambda c: forge(
            {"alg": "PS256", "kid": c.rsa.kid},
            c.good(),
            key=SigningKey("PS256", c.rsa.kid, c.rsa.private),
        ),
        "jwt_alg_not_allowed",
    ),
    (
        "es256-alg-on-rsa-kid",
        "EC algorithm with an RSA key",
        lambda c: forge({"alg": "ES256", "kid": c.rsa.kid}, c.good(), key=c.ec),
        "jwt_alg_not_allowed",
    ),
    (
        "es512-not-offered",
        "algorithm outside the default list",
        lambda c: forge({"alg": "ES512", "kid": c.ec.kid}, c.good(), signature=bytes(132)),
        "jwt_alg_not_allowed",
    ),
    # -- kid injection -----------------------------------------------------------------------
    (
        "kid-path-traversal",
        "kid read as a file path",
        lambda c: c.attacker.sign(c.good(), kid="../../../../etc/passwd"),
        "jwt_unknown_kid",
    ),
    (
        "kid-dev-null",
        "kid naming an empty file (empty HMAC key)",
        lambda c: forge({"alg": "HS256", "kid": "/dev/null"}, c.good(), signature=b""),
        "jwt_alg_not_allowed",
    ),
    (
        "kid-sql",
        "kid used in an SQL query",
        lambda c: c.attacker.sign(c.good(), kid="' OR 1=1 --"),
        "jwt_unknown_kid",
    ),
    (
        "kid-sql-union",
        "kid used in an SQL query",
        lambda c: c.attacker.sign(c.good(), kid="x' UNION SELECT 'key"),
        "jwt_unknown_kid",
    ),
    (
        "kid-command",
        "kid passed to a shell",
        lambda c: c.attacker.sign(c.good(), kid="k1|curl 127.0.0.1"),
        "jwt_unknown_kid",
    ),
    (
        "kid-nul",
        "kid with a NUL byte",
        lambda c: c.attacker.sign(c.good(), kid="rsa-1\x00"),
        "jwt_unknown_kid",
    ),
    (
        "kid-huge",
        "a 10 000 character kid",
        lambda c: c.attacker.sign(c.good(), kid="k" * 10_000),
        "jwt_unknown_kid",
    ),
    (
        "kid-integer",
        "kid that is not a string",
        lambda c: forge({"alg": "RS256", "kid": 1}, c.good(), key=c.attacker),
        "jwt_malformed",
    ),
    (
        "kid-object",
        "kid that is an object",
        lambda c: forge({"alg": "RS256", "kid": {"$ne": ""}}, c.good(), key=c.attacker),
        "jwt_malformed",
    ),
    (
        "kid-trusted-signed-by-attacker",
        "a trusted kid on the attacker's signature",
        lambda c: c.attacker.sign(c.good(), kid=c.rsa.kid),
        "jwt_bad_signature",
    ),
    # -- embedded keys: jku / x5u / jwk / x5c must never be fetched or trusted ------------
    (
        "jku-attacker",
        "key set URL chosen by the token",
        lambda c: c.attacker.sign(c.good(), headers={"jku": c.evil.jwks_uri}),
        "jwt_unknown_kid",
    ),
    (
        "jku-attacker-trusted-kid",
        "jku with a trusted kid",
        lambda c: c.attacker.sign(c.good(), kid=c.rsa.kid, headers={"jku": c.evil.jwks_uri}),
        "jwt_bad_signature",
    ),
    (
        "x5u-attacker",
        "certificate URL chosen by the token",
        lambda c: c.attacker.sign(c.good(), kid=c.rsa.kid, headers={"x5u": c.evil.jwks_uri}),
        "jwt_bad_signature",
    ),
    (
        "jwk-embedded",
        "the token carries its own public key",
        lambda c: c.attacker.sign(c.good(), kid=c.rsa.kid, headers={"jwk": c.attacker.jwk()}),
        "jwt_bad_signature",
    ),
    (
        "jwk-embedded-own-kid",
        "embedded key with its own kid",
        lambda c: c.attacker.sign(c.good(), headers={"jwk": c.attacker.jwk()}),
        "jwt_unknown_kid",
    ),
    (
        "x5c-embedded",
        "the token carries a certificate chain",
        lambda c: c.attacker.sign(c.good(), kid=c.rsa.kid, headers={"x5c": ["MIIB"]}),
        "jwt_bad_signature",
    ),
    # -- crit (RFC 7515 section 4.1.11: unknown critical extensions MUST be rejected) -----
    (
        "crit-unknown",
        "a critical extension we do not understand",
        lambda c: forge(
            c.rs_header(crit=["http://example.com/ext"], **{"http://example.com/ext": True}),
            c.good(),
            key=c.rsa,
        ),
        "jwt_malformed",
    ),
    (
        "crit-unknown-absent",
        "crit naming a parameter that is not there",
        lambda c: forge(c.rs_header(crit=["exp"]), c.good(), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "crit-empty-list",
        "crit must not be empty",
        lambda c: forge(c.rs_header(crit=[]), c.good(), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "crit-string",
        "crit must be a list",
        lambda c: forge(c.rs_header(crit="b64"), c.good(), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "crit-b64-false",
        "unencoded payload (RFC 7797) we do not use",
        lambda c: forge(c.rs_header(crit=["b64"], b64=False), b"", key=c.rsa),
        "jwt_malformed",
    ),
    # -- structure ---------------------------------------------------------------------------
    ("one-segment", "wrong segment count", lambda c: "abc", "jwt_malformed"),
    (
        "two-segments",
        "wrong segment count",
        lambda c: ".".join(c.rsa.sign(c.good()).split(".")[:2]),
        "jwt_malformed",
    ),
    (
        "four-segments",
        "wrong segment count",
        lambda c: c.rsa.sign(c.good()) + ".x",
        "jwt_malformed",
    ),
    (
        "jwe-five-segments",
        "an encrypted JWT (JWE)",
        lambda c: b64(b'{"alg":"RSA-OAEP","enc":"A256GCM"}') + ".a.b.c.d",
        "jwt_malformed",
    ),
    ("only-dots", "empty segments", lambda c: "..", "jwt_malformed"),
    (
        "empty-signature",
        "signature stripped",
        lambda c: c.rsa.sign(c.good()).rsplit(".", 1)[0] + ".",
        "jwt_bad_signature",
    ),
    (
        "signature-of-another-token",
        "signature swapped in from a valid token",
        lambda c: (
            c.rsa.sign(c.good(sub="mallory")).rsplit(".", 1)[0]
            + "."
            + c.rsa.sign(c.good()).rsplit(".", 1)[1]
        ),
        "jwt_bad_signature",
    ),
    ("ecdsa-psychic-signature", "CVE-2022-21449, r = s = 0", _ecdsa_zero, "jwt_bad_signature"),
    ("ecdsa-der-signature", "DER instead of raw r||s", _der_es256, "jwt_bad_signature"),
    (
        "non-utf8-payload",
        "payload bytes that are not UTF-8",
        lambda c: forge(c.rs_header(), b'\xff\xfe{"iss": "x"}', key=c.rsa),
        "jwt_malformed",
    ),
    (
        "non-utf8-in-string",
        "invalid UTF-8 inside a JSON string",
        lambda c: forge(
            c.rs_header(), b'{"iss": "' + ISS.encode() + b'", "sub": "\xc3("}', key=c.rsa
        ),
        "jwt_malformed",
    ),
    (
        "non-utf8-header",
        "header bytes that are not UTF-8",
        lambda c: forge(b'\xff{"alg":"RS256"}', c.good(), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "payload-not-object",
        "payload is a JSON array",
        lambda c: forge(c.rs_header(), b"[1, 2]", key=c.rsa),
        "jwt_malformed",
    ),
    (
        "payload-not-json",
        "payload is not JSON",
        lambda c: forge(c.rs_header(), b"iss=me", key=c.rsa),
        "jwt_malformed",
    ),
    (
        "header-not-object",
        "header is a JSON string",
        lambda c: forge(b'"RS256"', c.good(), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "base64-padding",
        "padded base64 segments",
        lambda c: ".".join(s + "==" for s in c.rsa.sign(c.good()).split(".")),
        "jwt_malformed",
    ),
    (
        "base64-std-alphabet",
        "'+' and '/' instead of base64url",
        lambda c: (
            c.rsa.sign(c.good()).replace("-", "+").replace("_", "/")
            if ("-" in c.rsa.sign(c.good()) or "_" in c.rsa.sign(c.good()))
            else "a+b.c/d.e"
        ),
        "jwt_malformed",
    ),
    ("base64-garbage", "characters outside base64", lambda c: "e!J.e$J.e@J", "jwt_malformed"),
    (
        "whitespace-inside",
        "a newline inside the token",
        lambda c: c.rsa.sign(c.good()).replace(".", ".\n", 1),
        "jwt_malformed",
    ),
    # -- size and depth ------------------------------------------------------------------------
    (
        "huge-token",
        "a token over the size bound",
        lambda c: c.rsa.sign(c.good(pad="x" * MAX_TOKEN_BYTES)),
        "jwt_malformed",
    ),
    ("huge-forged-token", "a megabyte of token", lambda c: "e" * (1024 * 1024), "jwt_malformed"),
    (
        "deeply-nested-claims",
        "recursion in the JSON parser",
        lambda c: forge(c.rs_header(), _nested(3000), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "deeply-nested-header",
        "recursion in the header parser",
        lambda c: forge(
            '{"alg": "RS256", "x": ' + "[" * 3000 + "]" * 3000 + "}", c.good(), key=c.rsa
        ),
        "jwt_malformed",
    ),
    # -- duplicate JSON keys (RFC 7515 section 5.2 / RFC 7519 section 4: last one or reject) --
    (
        "dup-alg-none-last",
        "a parser that reads the first alg",
        lambda c: forge(f'{{"alg": "RS256", "kid": "{c.rsa.kid}", "alg": "none"}}', c.good()),
        "jwt_alg_not_allowed",
    ),
    (
        "dup-alg-rs-last-unsigned",
        "a parser that reads the first alg, unsigned",
        lambda c: forge(f'{{"alg": "none", "kid": "{c.rsa.kid}", "alg": "RS256"}}', c.good()),
        "jwt_bad_signature",
    ),
    (
        "dup-iss-forged",
        "first iss trusted, last the attacker's",
        lambda c: forge(
            '{"alg": "RS256", "kid": "attacker"}',
            f'{{"iss": "{ISS}", "iss": "https://evil.example", "sub": "a", "aud": "{AUD}"}}',
            key=c.attacker,
        ),
        "jwt_unknown_issuer",
    ),
    (
        "dup-kid-forged",
        "first kid the attacker's, last a trusted one",
        lambda c: forge(
            f'{{"alg": "RS256", "kid": "attacker", "kid": "{c.rsa.kid}"}}', c.good(), key=c.attacker
        ),
        "jwt_bad_signature",
    ),
    # -- claims (only reached with a valid signature) -------------------------------------------
    (
        "exp-string",
        "exp as a string (compared as text somewhere)",
        lambda c: forge(c.rs_header(), {**c.good(), "exp": str(int(NOW + 300))}, key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-bool",
        "exp: true",
        lambda c: forge(c.rs_header(), {**c.good(), "exp": True}, key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-list",
        "exp as a list",
        lambda c: forge(c.rs_header(), {**c.good(), "exp": [NOW + 300]}, key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-nan",
        "exp: NaN never compares as expired",
        lambda c: forge(c.rs_header(), _claims_text(c, exp="NaN"), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-infinity",
        "exp: Infinity",
        lambda c: forge(c.rs_header(), _claims_text(c, exp="Infinity"), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-overflow",
        "exp: 1e400 (inf as a float)",
        lambda c: forge(c.rs_header(), _claims_text(c, exp="1e400"), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "exp-huge-int",
        "exp: 10**400 (float overflow)",
        lambda c: forge(c.rs_header(), _claims_text(c, exp="1" + "0" * 400), key=c.rsa),
        "jwt_malformed",
    ),
    (
        "nbf-string",
        "nbf as a string",
        lambda c: forge(c.rs_header(), {**c.good(), "nbf": "0"}, key=c.rsa),
        "jwt_malformed",
    ),
    (
        "expired",
        "exp in the past (beyond the skew)",
        lambda c: c.rsa.sign(claims(ISS, now=NOW - 3600, audience=AUD)),
        "jwt_expired",
    ),
    (
        "not-yet-valid",
        "nbf in the future (beyond the skew)",
        lambda c: c.rsa.sign(c.good(not_before=NOW + 3600)),
        "jwt_not_yet_valid",
    ),
    (
        "wrong-audience",
        "a token for another service",
        lambda c: c.rsa.sign(claims(ISS, now=NOW, audience="other-api")),
        "jwt_bad_audience",
    ),
    (
        "audience-object",
        "aud as an object",
        lambda c: forge(c.rs_header(), {**c.good(), "aud": {"shop-api": True}}, key=c.rsa),
        "jwt_bad_audience",
    ),
    (
        "issuer-trailing-slash",
        "iss spelled almost like the trusted one",
        lambda c: c.rsa.sign(claims(ISS + "/", now=NOW, audience=AUD)),
        "jwt_unknown_issuer",
    ),
    (
        "issuer-missing",
        "no iss",
        lambda c: c.rsa.sign({k: v for k, v in c.good().items() if k != "iss"}),
        "jwt_missing_claim",
    ),
    (
        "issuer-number",
        "iss is not a string",
        lambda c: forge(c.rs_header(), {**c.good(), "iss": 1}, key=c.rsa),
        "jwt_malformed",
    ),
    (
        "subject-missing",
        "no sub: principal would be 'iss/'",
        lambda c: c.rsa.sign(claims(ISS, now=NOW, audience=AUD, subject=None)),
        "jwt_missing_claim",
    ),
    (
        "subject-object",
        "sub is not a string",
        lambda c: c.rsa.sign({**c.good(), "sub": {"id": "admin"}}),
        "jwt_malformed",
    ),
]


def _claims_text(c: Ctx, *, exp: str) -> str:
    """Claims with a raw JSON literal for exp (json.dumps cannot write NaN as a client might)."""
    return f'{{"iss": "{ISS}", "aud": "{AUD}", "sub": "alice", "exp": {exp}}}'


@pytest.mark.parametrize(("attack", "meaning", "make", "reason"), CASES, ids=[c[0] for c in CASES])
def test_token_trick_is_denied(
    ctx: Ctx, verifier: Verifier, attack: str, meaning: str, make: Callable[[Ctx], str], reason: str
) -> None:
    token = make(ctx)
    assert verifier.reason(token) == reason, f"{attack}: {meaning}"


@pytest.mark.parametrize("header", ["Bearer ", "Bearer     ", "bearer \t"])
def test_empty_bearer_is_rejected(verifier: Verifier, header: str) -> None:
    request = Request(method="GET", path="/", host="h", headers={"authorization": header})
    with pytest.raises(TokenRejected) as caught:
        verifier.resolver.resolve(request, verifier.auth, NOW)
    assert caught.value.reason == "jwt_malformed"


def test_hmac_confusion_denied_even_when_the_provider_lists_hs256(ctx: Ctx) -> None:
    """A provider that lists HS256 next to RS256 (and a JWKS without `alg` on the keys): the RSA
    public key still never becomes an HMAC secret."""
    registry = KeyRegistry()
    try:
        provider = JwtProvider(
            issuer=ISS,
            audiences=(AUD,),
            jwks_json=jwks_json(ctx.rsa, include_alg=False),
            algorithms=("RS256", "HS256"),
        )
        registry.ensure([provider])
        verifier = Verifier(registry, provider)
        assert verifier.resolve(ctx.rsa.sign(ctx.good())).user is not None
        assert verifier.reason(hmac_confusion_token(ctx.rsa, ctx.good())) == "jwt_alg_not_allowed"
        # Even listing "none" explicitly does not make it acceptable.
        none_provider = JwtProvider(
            issuer=ISS, jwks_json=jwks_json(ctx.rsa), algorithms=("none", "RS256")
        )
        registry.ensure([provider, none_provider])
        none_verifier = Verifier(registry, none_provider)
        assert none_verifier.reason(forge({"alg": "none"}, ctx.good())) == "jwt_alg_not_allowed"
    finally:
        registry.close()


def test_two_different_tokens_are_refused(ctx: Ctx) -> None:
    """Header and query carry different tokens: which one is 'the' identity is ambiguous."""
    registry = KeyRegistry()
    try:
        provider = JwtProvider(
            issuer=ISS,
            audiences=(AUD,),
            jwks_json=jwks_json(ctx.rsa),
            locations=(
                TokenLocation(header="authorization", prefix="Bearer "),
                TokenLocation(query="access_token"),
            ),
        )
        registry.ensure([provider])
        resolver = ServiceResolver(Settings(), registry)
        good, other = ctx.rsa.sign(ctx.good()), ctx.rsa.sign(ctx.good(sub="bob"))
        request = Request(
            method="GET",
            path="/",
            host="h",
            query=f"access_token={other}",
            headers={"authorization": f"Bearer {good}"},
        )
        with pytest.raises(TokenRejected) as caught:
            resolver.resolve(request, Authentication(jwt_providers=(provider,)), NOW)
        assert caught.value.reason == "jwt_malformed"
    finally:
        registry.close()


def test_duplicate_claim_in_a_validly_signed_token_reads_as_the_last(
    ctx: Ctx, verifier: Verifier
) -> None:
    """RFC 7519 section 4: a parser must reject duplicate claim names or use the lexically last
    one. Either is fine; reading the *first* would let a token mean two things."""
    payload = (
        f'{{"iss": "{ISS}", "aud": "{AUD}", "exp": {int(NOW + 300)}, '
        '"sub": "alice", "sub": "admin"}'
    )
    token = forge(ctx.rs_header(), payload, key=ctx.rsa)
    try:
        identity = verifier.resolve(token)
    except TokenRejected as error:
        assert error.reason == "jwt_malformed"
        return
    assert identity.user is not None and identity.user.subject == "admin"


# -- mutations of a valid token: any change is refused, nothing else escapes -----------------

_B64URL = string.ascii_letters + string.digits + "-_"


@st.composite
def _mutations(draw: st.DrawFn, token: str) -> str:
    chars = list(token)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "swap-segments", "truncate"]))
        if not chars:
            break
        at = draw(st.integers(0, len(chars) - 1))
        if kind == "replace":
            chars[at] = draw(st.sampled_from(_B64URL + ".=+/ %\x00é"))
        elif kind == "delete":
            del chars[at]
        elif kind == "insert":
            chars.insert(at, draw(st.sampled_from(_B64URL + ".")))
        elif kind == "truncate":
            chars = chars[:at]
        else:
            parts = "".join(chars).split(".")
            if len(parts) >= 2:
                i, j = draw(st.permutations(range(len(parts))))[:2]
                parts[i], parts[j] = parts[j], parts[i]
            chars = list(".".join(parts))
    return "".join(chars)


@pytest.fixture(scope="module")
def honest_tokens(ctx: Ctx) -> dict[str, str]:
    return {"RS256": ctx.rsa.sign(ctx.good()), "ES256": ctx.ec.sign(ctx.good())}


@HOSTILE
@given(data=st.data(), alg=st.sampled_from(["RS256", "ES256"]))
def test_mutated_tokens_are_refused(
    data: st.DataObject, alg: str, verifier: Verifier, honest_tokens: dict[str, str]
) -> None:
    token = honest_tokens[alg]
    mutated = data.draw(_mutations(token))
    if mutated == token:
        return
    try:
        identity = verifier.resolve(mutated)
    except TokenRejected as error:
        assert error.status == 401 and error.reason.startswith("jwt_")
        return
    # A mutation can leave the token's meaning intact only by not touching the token proper
    # (e.g. trailing whitespace, stripped by the Bearer lookup).
    assert mutated.strip() == token, f"mutated token accepted: {mutated!r} -> {identity}"
