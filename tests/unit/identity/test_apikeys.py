"""API-key lookup (authz.identity.apikeys): locations, hashing, rejections."""

from __future__ import annotations

import hashlib
from types import MappingProxyType

import pytest

from authz.errors import ApiKeyRejected
from authz.identity.apikeys import find_api_key, key_hash
from authz.model import Request
from authz.policy.language.spec import ApiKey, ApiKeyProvider, TokenLocation

GOOD, OTHER = "k-good-0123456789", "k-other-0123456789"


def provider(
    name: str, *locations: TokenLocation, keys: dict[str, str] | None = None
) -> ApiKeyProvider:
    table = {
        key_hash(secret): ApiKey(key_id, key_hash(secret), MappingProxyType({"tier": "gold"}))
        for key_id, secret in (keys or {"acme-1": GOOD}).items()
    }
    return ApiKeyProvider(name, locations, f"/p/{name}.keys.yaml", MappingProxyType(table))


HEADER = TokenLocation(header="x-api-key")
PARTNERS = provider("partners", HEADER)


def req(headers: dict[str, str] | None = None, query: str = "") -> Request:
    return Request("GET", "/", "h", query=query, headers=headers or {})


def test_key_hash_is_the_hex_sha256() -> None:
    assert key_hash("abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("location", "request_"),
    [
        (HEADER, req({"x-api-key": GOOD})),
        (
            TokenLocation(header="authorization", prefix="ApiKey "),
            req({"authorization": f"apikey {GOOD}"}),
        ),
        (TokenLocation(query="api_key"), req(query=f"api_key={GOOD}")),
        (TokenLocation(cookie="key"), req({"cookie": f"a=b; key={GOOD}"})),
    ],
)
def test_a_known_key_gives_the_principal_and_labels(
    location: TokenLocation, request_: Request
) -> None:
    found = find_api_key(request_, [provider("partners", location)])
    assert found is not None
    assert found.principal == "partners/acme-1"
    assert found.labels == {"tier": "gold"}
    assert found.found_at == location


def test_no_key_is_no_identity() -> None:
    assert find_api_key(req({"authorization": "Bearer x"}), [PARTNERS]) is None


@pytest.mark.parametrize(
    "request_",
    [
        req({"x-api-key": "not-a-key"}),
        req({"x-api-key": ""}),
        # A header sent twice reaches us joined with ",": two different keys, refused.
        req({"x-api-key": f"{GOOD},{OTHER}"}),
        req({"x-api-key": f"{OTHER},{GOOD}"}),
    ],
)
def test_unknown_empty_or_smuggled_keys_are_rejected(request_: Request) -> None:
    with pytest.raises(ApiKeyRejected) as caught:
        find_api_key(request_, [PARTNERS])
    assert caught.value.reason == "api_key_invalid"
    assert caught.value.status == 401
    assert caught.value.realm == "partners"


def test_two_query_values_are_refused_even_if_one_is_good() -> None:
    query_provider = provider("partners", TokenLocation(query="api_key"))
    with pytest.raises(ApiKeyRejected):
        find_api_key(req(query=f"api_key={GOOD}&api_key={OTHER}"), [query_provider])


def test_the_same_key_twice_is_one_key() -> None:
    found = find_api_key(req({"x-api-key": f"{GOOD}, {GOOD}"}), [PARTNERS])
    assert found is not None and found.principal == "partners/acme-1"


def test_a_key_is_looked_up_only_in_the_providers_whose_location_held_it() -> None:
    internal = provider("internal", TokenLocation(header="x-internal-key"), keys={"ops": OTHER})
    with pytest.raises(ApiKeyRejected):
        # OTHER is internal's key, presented where partners look: not a partners key.
        find_api_key(req({"x-api-key": OTHER}), [PARTNERS, internal])
    found = find_api_key(req({"x-internal-key": OTHER}), [PARTNERS, internal])
    assert found is not None and found.principal == "internal/ops"


def test_two_providers_on_one_header_share_it() -> None:
    internal = provider("internal", HEADER, keys={"ops": OTHER})
    found = find_api_key(req({"x-api-key": OTHER}), [PARTNERS, internal])
    assert found is not None and found.principal == "internal/ops"
