"""authz.wire.view.headers_from_pairs: its one-comprehension reading of the common request
gives exactly what the field-by-field reading gives (same dict, same error) for any pairs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.config import Settings
from authz.errors import AuthzError
from authz.wire import view

LIMITS = replace(Settings().limits, max_header_value_bytes=40, max_header_bytes=200)
NAMES = st.sampled_from(["a", "A", "cookie", "Cookie", "x-b", "X-B", "İ", "i̇"])
VALUES = st.text(alphabet=st.sampled_from("xé€😀;,"), max_size=16)


def by_field(pairs: list[tuple[str, str]], ordered: bool) -> dict[str, str] | str:
    try:
        headers = view._joined(pairs, LIMITS, ordered)
        if sum(len(n.encode()) + len(v.encode()) for n, v in pairs) > LIMITS.max_header_bytes:
            raise view.RequestTooLarge("total")
    except AuthzError as error:
        return type(error).__name__ + ("" if str(error) == "total" else str(error))
    return headers


def fast(pairs: list[tuple[str, str]], ordered: bool) -> dict[str, str] | str:
    try:
        return view.headers_from_pairs(pairs, LIMITS, ordered=ordered)
    except AuthzError as error:
        name = type(error).__name__
        return name if "headers are larger" in str(error) else name + str(error)


@given(st.lists(st.tuples(NAMES, VALUES), max_size=12), st.booleans())
def test_the_fast_reading_is_the_field_by_field_one(
    pairs: list[tuple[str, str]], ordered: bool
) -> None:
    assert fast(pairs, ordered) == by_field(pairs, ordered)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_long_value_is_still_refused(ordered: bool) -> None:
    with pytest.raises(view.RequestTooLarge, match="'a'"):
        view.headers_from_pairs([("b", "x"), ("a", "x" * 41)], LIMITS, ordered=ordered)
