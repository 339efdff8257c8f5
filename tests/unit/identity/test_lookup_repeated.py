"""A repeated token header (Envoy joins repeats with ",") cannot hide a bad token."""

from __future__ import annotations

import pytest

from authz.errors import TokenRejected
from authz.identity.lookup import find_token
from authz.model import Request
from authz.policy.language.spec import JwtProvider


def _request(value: str) -> Request:
    return Request(method="GET", path="/", host="h", headers={"authorization": value})


PROVIDER = JwtProvider(issuer="https://id.example")


def _refused(value: str) -> None:
    with pytest.raises(TokenRejected) as raised:
        find_token(_request(value), [PROVIDER])
    assert raised.value.reason == "jwt_malformed"


def test_a_token_beside_junk_is_refused_not_read() -> None:
    """jwt_authn finds the prefix anywhere in the joined value: every door refuses what is
    not exactly `<prefix><token>` (docs/policy.md, "One rule for ambiguous requests")."""
    _refused("\x00,Bearer x")
    _refused("xBearer a.b.c")
    _refused("Basic Bearer a.b.c")
    _refused("Bearer a.b.c extra")


def test_the_scheme_alone_is_an_empty_token() -> None:
    _refused("Bearer")
    _refused("bearer \t")


def test_the_same_token_twice_is_refused() -> None:
    _refused("Bearer a.b.c,Bearer a.b.c")


def test_a_token_outside_base64url_is_refused() -> None:
    """Standard base64 (`+`, `/`) decodes to the same signature bytes in PyJWT while
    jwt_authn stops reading at the `+`: one spelling only."""
    _refused("Bearer a.b.c+d")


def test_the_scheme_in_any_case_is_read() -> None:
    for scheme in ("bearer", "BEARER", "bEaReR"):
        found = find_token(_request(f"{scheme}  a.b.c"), [PROVIDER])
        assert found is not None and found.token == "a.b.c"


def test_two_different_tokens_are_refused() -> None:
    with pytest.raises(TokenRejected) as raised:
        find_token(_request("Bearer a.b.c, Bearer d.e.f"), [PROVIDER])
    assert raised.value.reason == "jwt_malformed"


def test_other_schemes_are_not_tokens() -> None:
    assert find_token(_request("Basic dXNlcjpwYXNz"), [PROVIDER]) is None
    _refused("Basic dXNlcjpwYXNz, Bearer a.b.c")
