"""End-user identity: token lookup, the verification matrix per algorithm, the cache."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jwt.exceptions import PyJWTError

from authz.config import Settings
from authz.errors import TokenRejected
from authz.identity import MAX_TOKEN_BYTES, KeyRegistry
from authz.identity.sources import ServiceResolver
from authz.model import Identity, Request, TokenUse
from authz.policy.language.spec import Authentication, JwtProvider, TokenLocation
from tests.support.tokens import (
    ALL_ALGORITHMS,
    SigningKey,
    claims,
    hmac_confusion_token,
    jwks_json,
    make_key,
    tamper,
    unsigned_token,
)

from .conftest import NOW, bearer, request

ISS = "https://id.example.com"


class Setup:
    """One provider with inline keys, a registry and a resolver."""

    def __init__(
        self, registries: Callable[..., KeyRegistry], keys: list[SigningKey], **provider: Any
    ) -> None:
        provider.setdefault("audiences", ("shop-api",))
        self.provider = JwtProvider(issuer=ISS, jwks_json=jwks_json(*keys), **provider)
        self.auth = Authentication(jwt_providers=(self.provider,))
        self.registry = registries()
        self.registry.ensure([self.provider])
        self.resolver = ServiceResolver(Settings(), self.registry)

    def resolve(self, req: Request, now: float = NOW) -> Identity:
        return self.resolver.resolve(req, self.auth, now)

    def reason(self, req: Request, now: float = NOW) -> str:
        with pytest.raises(TokenRejected) as caught:
            self.resolve(req, now)
        error = caught.value
        assert error.status == 401
        # Safe for WWW-Authenticate error_description (RFC 6750 section 3).
        assert all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in str(error))
        return error.reason


def good_claims(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("audience", "shop-api")
    return claims(ISS, now=NOW, **kwargs)


@pytest.fixture(params=ALL_ALGORITHMS)
def alg_setup(
    request: pytest.FixtureRequest, registries: Callable[..., KeyRegistry]
) -> Iterator[tuple[Setup, SigningKey]]:
    alg = request.param
    key = make_key(alg)
    # HS256 only when the provider lists it explicitly; the others are the default set.
    algorithms = ("HS256",) if alg == "HS256" else ()
    yield Setup(registries, [key], algorithms=algorithms), key


# -- the matrix, per algorithm -------------------------------------------------------------


def test_valid(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    identity = setup.resolve(bearer(key.sign(good_claims(scope="cart"))))
    assert identity.user is not None
    assert identity.user.principal == f"{ISS}/alice"
    assert identity.user.claims["scope"] == "cart"
    assert identity.token == TokenUse(0, TokenLocation(header="authorization", prefix="Bearer "))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"lifetime": -61}, "jwt_expired"),  # exp 61 s ago: past the 60 s skew
        ({"lifetime": -30}, None),  # expired 30 s ago: inside the skew
        ({"not_before": NOW + 120}, "jwt_not_yet_valid"),
        ({"not_before": NOW + 30}, None),  # inside the skew
        ({"audience": "other-api"}, "jwt_bad_audience"),
        ({"audience": ["other", "shop-api"]}, None),
        ({"audience": None}, "jwt_bad_audience"),
        ({"subject": None}, "jwt_missing_claim"),
    ],
)
def test_claims(
    alg_setup: tuple[Setup, SigningKey], payload: dict[str, Any], reason: str | None
) -> None:
    setup, key = alg_setup
    req = bearer(key.sign(good_claims(**payload)))
    if reason is None:
        assert setup.resolve(req).user is not None
    else:
        assert setup.reason(req) == reason


def test_wrong_issuer(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    token = key.sign(claims("https://evil.example.com", now=NOW, audience="shop-api"))
    assert setup.reason(bearer(token)) == "jwt_unknown_issuer"


def test_bad_signature(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    token = key.sign(good_claims())
    with pytest.raises(TokenRejected) as caught:
        setup.resolve(bearer(tamper(token)))
    assert caught.value.reason == "jwt_bad_signature"
    assert isinstance(caught.value.__cause__, PyJWTError)  # raise ... from


def test_signed_by_another_key_with_the_same_kid(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    impostor = make_key(key.alg if not key.alg.startswith(("RS", "PS")) else "RS256", kid=key.kid)
    if key.alg.startswith(("RS", "PS")):
        # RSA keys come from a small pool; make sure the impostor really differs.
        while impostor.public.public_numbers() == key.public.public_numbers():
            impostor = make_key("RS256", kid=key.kid)
    token = impostor.sign(good_claims(), alg=key.alg)
    assert setup.reason(bearer(token)) == "jwt_bad_signature"


def test_alg_none(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    assert setup.reason(bearer(unsigned_token(good_claims(), kid=key.kid))) == "jwt_alg_not_allowed"


def test_unknown_kid(alg_setup: tuple[Setup, SigningKey]) -> None:
    setup, key = alg_setup
    token = key.sign(good_claims(), kid="not-published")
    assert setup.reason(bearer(token)) == "jwt_unknown_kid"


# -- algorithms and keys -----------------------------------------------------------------------


def test_hs256_signed_with_rsa_public_key(registries: Callable[..., KeyRegistry]) -> None:
    rsa_key = make_key("RS256")
    token = hmac_confusion_token(rsa_key, good_claims())
    assert Setup(registries, [rsa_key]).reason(bearer(token)) == "jwt_alg_not_allowed"
    # Even when the provider allows HS256 too, an RSA key is never an HMAC secret.
    both = Setup(registries, [rsa_key], algorithms=("RS256", "HS256"))
    assert both.reason(bearer(token)) == "jwt_alg_not_allowed"
    # A JWK without "alg" does not change that.
    provider = JwtProvider(
        issuer=ISS,
        audiences=("shop-api",),
        algorithms=("RS256", "HS256"),
        jwks_json=jwks_json(rsa_key, include_alg=False),
    )
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(bearer(token), Authentication(jwt_providers=(provider,)), NOW)
    assert caught.value.reason == "jwt_alg_not_allowed"


def test_hs256_not_allowed_by_default(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("HS256")
    assert Setup(registries, [key]).reason(bearer(key.sign(good_claims()))) == "jwt_alg_not_allowed"


def test_algorithm_outside_provider_list(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key], algorithms=("RS256",))
    assert setup.reason(bearer(key.sign(good_claims()))) == "jwt_alg_not_allowed"


def test_key_alg_binds(registries: Callable[..., KeyRegistry]) -> None:
    # The JWK says RS256; a PS256 token with its kid is refused (RFC 7517 section 4.4).
    key = make_key("RS256")
    token = key.sign(good_claims(), alg="PS256")
    assert Setup(registries, [key]).reason(bearer(token)) == "jwt_alg_not_allowed"


def test_rsa_key_without_alg_serves_ps256(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("PS256")
    provider = JwtProvider(issuer=ISS, jwks_json=jwks_json(key, include_alg=False))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry)
    identity = resolver.resolve(
        bearer(key.sign(good_claims())), Authentication(jwt_providers=(provider,)), NOW
    )
    assert identity.user is not None and identity.user.principal == f"{ISS}/alice"


def test_no_kid(registries: Callable[..., KeyRegistry]) -> None:
    one, two = make_key("ES256"), make_key("ES256")
    token = one.sign(good_claims(), kid=False)
    assert Setup(registries, [one]).resolve(bearer(token)).user is not None  # the only key
    assert (
        Setup(registries, [one, two]).reason(bearer(token)) == "jwt_unknown_kid"
    )  # no safe choice


def test_several_keys_chosen_by_kid(registries: Callable[..., KeyRegistry]) -> None:
    keys = [make_key("ES256"), make_key("EdDSA"), make_key("RS256")]
    setup = Setup(registries, keys)
    for key in keys:
        user = setup.resolve(bearer(key.sign(good_claims(subject=key.alg)))).user
        assert user is not None and user.principal == f"{ISS}/{key.alg}"  # the key of its kid


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "e30.e30.",  # {} header: no alg
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        "eyJhbGciOiJFUzI1NiJ9.WzFd.c2ln",  # payload is a JSON list
        "x" * (MAX_TOKEN_BYTES + 1),
    ],
)
def test_garbage(registries: Callable[..., KeyRegistry], token: str) -> None:
    setup = Setup(registries, [make_key("ES256")])
    assert setup.reason(bearer(token)) in {"jwt_malformed", "jwt_missing_claim"}
    assert setup.reason(bearer(token)) == (
        "jwt_missing_claim" if token == "e30.e30." else "jwt_malformed"
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"exp": "tomorrow"}, "jwt_malformed"),
        ({"exp": True}, "jwt_malformed"),
        ({"exp": float("nan")}, "jwt_malformed"),
        ({"nbf": [1]}, "jwt_malformed"),
        ({"iss": None}, "jwt_missing_claim"),
        ({"iss": 7}, "jwt_malformed"),
        ({"sub": 42}, "jwt_malformed"),
        ({"sub": ""}, "jwt_missing_claim"),
        ({"aud": 5}, "jwt_bad_audience"),
    ],
)
def test_bad_claim_values(
    registries: Callable[..., KeyRegistry], payload: dict[str, Any], reason: str
) -> None:
    key = make_key("ES256")
    body = good_claims()
    body.update(payload)
    if body.get("iss") is None:
        del body["iss"]
    assert Setup(registries, [key]).reason(bearer(key.sign_raw(body))) == reason


def test_oversized_but_valid_token_is_refused_before_parsing(
    registries: Callable[..., KeyRegistry],
) -> None:
    key = make_key("ES256")
    token = key.sign(good_claims(padding="x" * MAX_TOKEN_BYTES))
    assert Setup(registries, [key]).reason(bearer(token)) == "jwt_malformed"


# -- where the token is ------------------------------------------------------------------------

LOCATIONS = (
    TokenLocation(header="authorization", prefix="Bearer "),
    TokenLocation(header="x-token"),
    TokenLocation(query="access_token"),
    TokenLocation(cookie="session"),
)


@pytest.fixture
def located(registries: Callable[..., KeyRegistry]) -> tuple[Setup, SigningKey]:
    key = make_key("ES256")
    return Setup(registries, [key], locations=LOCATIONS), key


def test_missing_token_is_anonymous(located: tuple[Setup, SigningKey]) -> None:
    setup, _ = located
    assert setup.resolve(request()) == Identity()
    assert setup.resolve(request(headers={"authorization": "Basic dXNlcjpwYXNz"})).user is None
    assert setup.resolve(request(query="other=1", headers={"cookie": "theme=dark"})).user is None


@pytest.mark.parametrize(
    ("make_request", "where"),
    [
        (lambda t: request(headers={"authorization": f"bearer {t}"}), LOCATIONS[0]),
        (lambda t: request(headers={"authorization": f"BEARER   {t}"}), LOCATIONS[0]),
        (lambda t: request(headers={"x-token": t}), LOCATIONS[1]),
        (lambda t: request(query=f"a=1&access_token={t}"), LOCATIONS[2]),
        (lambda t: request(query=f"?access_token={t}"), LOCATIONS[2]),
        (lambda t: request(headers={"cookie": f"theme=dark; session={t}; x=y"}), LOCATIONS[3]),
        (lambda t: request(headers={"cookie": f'session="{t}"'}), LOCATIONS[3]),
    ],
)
def test_token_locations(
    located: tuple[Setup, SigningKey], make_request: Callable[[str], Request], where: TokenLocation
) -> None:
    setup, key = located
    identity = setup.resolve(make_request(key.sign(good_claims())))
    assert identity.user is not None and identity.token is not None
    assert identity.token.found_at == where


@pytest.mark.parametrize(
    "make_request",
    [
        lambda t: request(headers={"authorization": f"Bearer {t}", "cookie": f"session={t}"}),
        lambda t: request(headers={"authorization": f"Bearer {t}"}, query=f"access_token={t}"),
        lambda t: request(headers={"authorization": f"Bearer {t}", "x-token": t}),
        lambda t: request(headers={"x-token": t}, query=f"access%5Ftoken={t}"),
    ],
)
def test_same_token_in_two_places_is_refused(
    located: tuple[Setup, SigningKey], make_request: Callable[[str], Request]
) -> None:
    """RFC 6750 section 2: one method per request. A `forward: false` token is removed from
    the place it was read; no enforcement point can remove every copy (Envoy's jwt_authn
    removes only a header, nginx no query parameter), so a second copy is refused."""
    setup, key = located
    assert setup.reason(make_request(key.sign(good_claims()))) == "token_in_two_places"


def test_same_token_repeated_in_one_place_is_one_place(located: tuple[Setup, SigningKey]) -> None:
    """A parameter sent twice (or under two spellings) is one place, removed as a whole."""
    setup, key = located
    token = key.sign(good_claims())
    req = request(query=f"access_token={token}&access%5Ftoken={token}")
    identity = setup.resolve(req)
    assert identity.user is not None and identity.token is not None
    assert identity.token.found_at == LOCATIONS[2]


def test_two_different_tokens_are_refused(located: tuple[Setup, SigningKey]) -> None:
    setup, key = located
    one, two = key.sign(good_claims()), key.sign(good_claims(subject="bob"))
    req = request(headers={"authorization": f"Bearer {one}"}, query=f"access_token={two}")
    assert setup.reason(req) == "jwt_malformed"


def test_empty_token_is_refused(located: tuple[Setup, SigningKey]) -> None:
    setup, _ = located
    assert setup.reason(request(query="access_token=")) == "jwt_malformed"


def test_provider_chosen_by_issuer(registries: Callable[..., KeyRegistry]) -> None:
    first, second = make_key("ES256"), make_key("RS256")
    providers = (
        JwtProvider(issuer="https://one.example", jwks_json=jwks_json(first)),
        JwtProvider(issuer="https://two.example", jwks_json=jwks_json(second)),
    )
    registry = registries()
    registry.ensure(providers)
    resolver = ServiceResolver(Settings(), registry)
    auth = Authentication(jwt_providers=providers)
    identity = resolver.resolve(
        bearer(second.sign(claims("https://two.example", now=NOW))), auth, NOW
    )
    assert identity.user is not None and identity.token is not None
    assert identity.token.provider == 1
    # Signed by the first issuer's key but claiming the second issuer: not its key.
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(bearer(first.sign(claims("https://two.example", now=NOW))), auth, NOW)
    assert caught.value.reason == "jwt_unknown_kid"


def test_issuer_must_read_the_location(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    providers = (
        JwtProvider(
            issuer=ISS, jwks_json=jwks_json(key), locations=(TokenLocation(cookie="session"),)
        ),
        JwtProvider(issuer="https://other.example", jwks_json=jwks_json(make_key("ES256"))),
    )
    registry = registries()
    registry.ensure(providers)
    resolver = ServiceResolver(Settings(), registry)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(
            bearer(key.sign(claims(ISS, now=NOW))), Authentication(jwt_providers=providers), NOW
        )
    assert caught.value.reason == "jwt_bad_issuer"


def test_no_providers_means_token_ignored(registries: Callable[..., KeyRegistry]) -> None:
    resolver = ServiceResolver(Settings(), registries())
    assert resolver.resolve(bearer("garbage"), Authentication(), NOW) == Identity()


def test_provider_never_ensured_with_inline_keys(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    provider = JwtProvider(issuer=ISS, jwks_json=jwks_json(key))
    resolver = ServiceResolver(Settings(), registries())
    user = resolver.resolve(
        bearer(key.sign(claims(ISS, now=NOW))), Authentication(jwt_providers=(provider,)), NOW
    ).user
    assert user is not None and (user.issuer, user.subject) == (ISS, "alice")


def test_keys_unavailable(registries: Callable[..., KeyRegistry], tmp_path: Any) -> None:
    key = make_key("ES256")
    provider = JwtProvider(issuer=ISS, jwks_file=str(tmp_path / "missing.json"))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(
            bearer(key.sign(claims(ISS, now=NOW))), Authentication(jwt_providers=(provider,)), NOW
        )
    assert caught.value.reason == "jwt_keys_unavailable"
    assert registry.status()[ISS].startswith("unavailable: ")


# -- the verified-token cache ------------------------------------------------------------------


def test_second_resolve_does_not_verify_again(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    req = bearer(key.sign(good_claims()))
    first = setup.resolve(req)
    assert setup.resolver.verifier.signature_checks == 1
    second = setup.resolve(req, NOW + 10)
    assert second == first
    assert setup.resolver.verifier.signature_checks == 1
    assert setup.resolver.verifier.cache_hits == 1


def test_expired_cached_token_is_rejected(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    req = bearer(key.sign(good_claims(lifetime=100)))
    assert setup.resolve(req).user is not None
    assert setup.reason(req, NOW + 100 + 61) == "jwt_expired"
    assert setup.resolver.verifier.signature_checks == 1  # refused from the cache entry


def test_cache_is_per_provider_and_key_set(
    registries: Callable[..., KeyRegistry], tmp_path: Any
) -> None:
    key = make_key("ES256")
    path = tmp_path / "jwks.json"
    path.write_text(jwks_json(key))
    provider = JwtProvider(issuer=ISS, jwks_file=str(path))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry)
    auth = Authentication(jwt_providers=(provider,))
    req = bearer(key.sign(claims(ISS, now=NOW)))
    resolver.resolve(req, auth, NOW)
    # A stricter provider (audiences) is another cache key: verified again, and refused.
    strict = Authentication(
        jwt_providers=(JwtProvider(issuer=ISS, jwks_file=str(path), audiences=("x",)),)
    )
    registry.ensure([provider, strict.jwt_providers[0]])
    with pytest.raises(TokenRejected):
        resolver.resolve(req, strict, NOW)
    # After the key is removed from the JWKS (and the registry reloads it), the cached token
    # is not accepted any more.
    path.write_text(jwks_json(make_key("ES256")))
    registry.ensure([])
    registry.ensure([provider])
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(req, auth, NOW)
    assert caught.value.reason == "jwt_unknown_kid"


def test_cache_bounded(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    provider = JwtProvider(issuer=ISS, jwks_json=jwks_json(key))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry, token_cache_size=2)
    auth = Authentication(jwt_providers=(provider,))
    tokens = [key.sign(claims(ISS, now=NOW, subject=f"u{i}")) for i in range(3)]
    for token in tokens:
        resolver.resolve(bearer(token), auth, NOW)
    resolver.resolve(bearer(tokens[0]), auth, NOW)  # evicted: verified again
    assert resolver.verifier.signature_checks == 4


# -- Envoy's jwt_authn in front -------------------------------------------------------------


def metadata_setup(
    registries: Callable[..., KeyRegistry],
) -> tuple[ServiceResolver, Authentication]:
    provider = JwtProvider(
        issuer=ISS, audiences=("shop-api",), jwks_json=jwks_json(make_key("ES256"))
    )
    resolver = ServiceResolver(
        Settings(jwt_authn_metadata="envoy.filters.http.jwt_authn"), registries()
    )
    return resolver, Authentication(jwt_providers=(provider,))


def test_jwt_authn_metadata_accepted(registries: Callable[..., KeyRegistry]) -> None:
    resolver, auth = metadata_setup(registries)
    payload = good_claims(scope="cart")
    # A garbage token next to it is not looked at: Envoy verified the token.
    req = request(
        headers={"authorization": "Bearer garbage"}, jwt_metadata={"jwt_payload": payload}
    )
    identity = resolver.resolve(req, auth, NOW)
    assert identity.user is not None and identity.user.principal == f"{ISS}/alice"
    assert resolver.verifier.signature_checks == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (good_claims(audience="other"), "jwt_bad_audience"),
        (claims("https://evil.example", now=NOW, audience="shop-api"), "jwt_unknown_issuer"),
        (good_claims(lifetime=-3600), "jwt_expired"),
    ],
)
def test_jwt_authn_metadata_checked(
    registries: Callable[..., KeyRegistry], payload: dict[str, Any], reason: str
) -> None:
    resolver, auth = metadata_setup(registries)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(request(jwt_metadata={"jwt_payload": payload}), auth, NOW)
    assert caught.value.reason == reason


def test_jwt_authn_metadata_ignored_unless_enabled(registries: Callable[..., KeyRegistry]) -> None:
    _, auth = metadata_setup(registries)
    resolver = ServiceResolver(Settings(), registries())
    assert (
        resolver.resolve(request(jwt_metadata={"jwt_payload": good_claims()}), auth, NOW).user
        is None
    )


def test_jwt_authn_without_metadata_still_verifies_tokens(
    registries: Callable[..., KeyRegistry],
) -> None:
    resolver, auth = metadata_setup(registries)
    with pytest.raises(TokenRejected):
        resolver.resolve(bearer("garbage"), auth, NOW)


def test_claims_are_read_only(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    user = setup.resolve(bearer(key.sign(good_claims())))
    assert user.user is not None
    with pytest.raises(TypeError):
        user.user.claims["sub"] = "mallory"  # type: ignore[index]
    json.dumps(dict(user.user.claims))


def test_cache_hit_reports_where_the_token_is_now(located: tuple[Setup, SigningKey]) -> None:
    setup, key = located
    token = key.sign(good_claims())
    first = setup.resolve(request(headers={"authorization": f"Bearer {token}"}))
    again = setup.resolve(request(headers={"cookie": f"session={token}"}))
    assert first.user is not None and again.user is not None
    assert setup.resolver.verifier.cache_hits == 1
    assert again.token == TokenUse(0, TokenLocation(cookie="session"))


def test_cached_token_not_accepted_by_another_hosts_providers(
    registries: Callable[..., KeyRegistry],
) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    token = key.sign(good_claims())
    assert setup.resolve(bearer(token)).user is not None
    other = Authentication(
        jwt_providers=(
            JwtProvider(issuer="https://other.example", jwks_json=jwks_json(make_key("ES256"))),
        )
    )
    with pytest.raises(TokenRejected) as caught:
        setup.resolver.resolve(bearer(token), other, NOW)
    assert caught.value.reason == "jwt_unknown_issuer"


# -- what goes into headers (issue 10.5) ----------------------------------------------------

# Values Envoy refuses in a header (or would change: leading/trailing whitespace is trimmed by
# parsers), and a lone surrogate, which cannot even be encoded.
NOT_HEADER_SAFE = [
    "alice\r\nx-evil: 1",
    "alice\n",
    "al\rice",
    "al\x00ice",
    "al\x01ice",
    "al\x7fice",
    "al\x1bice",
    " alice",
    "alice\t",
    "al\ud800ice",
]


@pytest.mark.parametrize("subject", NOT_HEADER_SAFE)
def test_subject_that_cannot_be_a_header_is_refused(
    registries: Callable[..., KeyRegistry], subject: str
) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    assert setup.reason(bearer(key.sign(good_claims(subject=subject)))) == "jwt_invalid_claims"


@pytest.mark.parametrize("subject", NOT_HEADER_SAFE[:3])
def test_metadata_subject_that_cannot_be_a_header_is_refused(
    registries: Callable[..., KeyRegistry], subject: str
) -> None:
    resolver, auth = metadata_setup(registries)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(
            request(jwt_metadata={"jwt_payload": good_claims(subject=subject)}), auth, NOW
        )
    assert caught.value.reason == "jwt_invalid_claims"


@pytest.mark.parametrize("subject", ["alice", "user 42", "jos\u00e9", "a\tb", "\u7528\u6237"])
def test_header_safe_subjects_are_accepted(
    registries: Callable[..., KeyRegistry], subject: str
) -> None:
    key = make_key("ES256")
    identity = Setup(registries, [key]).resolve(bearer(key.sign(good_claims(subject=subject))))
    assert identity.user is not None and identity.user.subject == subject


def test_issuer_that_cannot_be_a_header_is_refused(registries: Callable[..., KeyRegistry]) -> None:
    key = make_key("ES256")
    issuer = "https://id.example.com/\x01"
    provider = JwtProvider(issuer=issuer, jwks_json=jwks_json(key))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry)
    with pytest.raises(TokenRejected) as caught:
        resolver.resolve(
            bearer(key.sign(claims(issuer, now=NOW))),
            Authentication(jwt_providers=(provider,)),
            NOW,
        )
    assert caught.value.reason == "jwt_invalid_claims"


def test_how_the_token_was_judged_is_told_for_traces(
    registries: Callable[..., KeyRegistry],
) -> None:
    key = make_key("ES256")
    setup = Setup(registries, [key])
    req = bearer(key.sign(good_claims()))
    cold = setup.resolve(req).user
    assert cold is not None and cold.token_check is not None
    assert not cold.token_check.cached
    assert cold.token_check.started_ns > 0 and cold.token_check.duration_ns > 0
    warm = setup.resolve(req).user
    assert warm is not None and warm.token_check is not None and warm.token_check.cached
    # A refused token was verified too: the refusal carries its timing.
    with pytest.raises(TokenRejected) as caught:
        setup.resolve(bearer(tamper(key.sign(good_claims()))))
    refused = caught.value.token_check
    assert refused is not None and not refused.cached and refused.duration_ns > 0
