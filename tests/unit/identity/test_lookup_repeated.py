"""A repeated token header (Envoy joins repeats with ",") cannot hide a bad token."""

from __future__ import annotations

import pytest

from authz.errors import TokenRejected
from authz.identity.lookup import find_token
from authz.model import Request
from authz.policy.spec import JwtProvider


def _request(value: str) -> Request:
    return Request(method="GET", path="/", host="h", headers={"authorization": value})


PROVIDER = JwtProvider(issuer="https://id.example")


def test_bad_token_beside_junk_is_still_a_token() -> None:
    found = find_token(_request("\x00,Bearer x"), [PROVIDER])
    assert found is not None and found.token == "x"


def test_two_different_tokens_are_refused() -> None:
    with pytest.raises(TokenRejected) as raised:
        find_token(_request("Bearer a.b.c, Bearer d.e.f"), [PROVIDER])
    assert raised.value.reason == "jwt_malformed"


def test_other_schemes_are_not_tokens() -> None:
    assert find_token(_request("Basic dXNlcjpwYXNz"), [PROVIDER]) is None
    found = find_token(_request("Basic dXNlcjpwYXNz, Bearer a.b.c"), [PROVIDER])
    assert found is not None and found.token == "a.b.c"
