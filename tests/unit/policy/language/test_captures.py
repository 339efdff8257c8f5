"""Path captures `{name}` in patterns (authz.policy.language.patterns)."""

from __future__ import annotations

import pytest

from authz.policy.language import patterns as pat


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("/t/{tenant}/{**}", {"tenant"}),
        ("/t/{tenant}/x/{id}", {"tenant", "id"}),
        ("/{org}/b", {"org"}),
        ("/t/{*}/{**}", set()),
        ("/t/*", set()),
    ],
)
def test_capture_names(pattern: str, names: set[str]) -> None:
    pat.check_path_pattern(pattern)
    assert pat.path_captures(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("/t/{Tenant}", "whole segments"),
        ("/t/x{id}", "whole segments"),
        ("/t/{a}/{a}", "bound twice"),
        ("/t/{a}*", "cannot end"),
        ("*{a}", "cannot be mixed"),
    ],
)
def test_bad_captures(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        pat.check_path_pattern(pattern)


def test_a_capture_matches_one_segment_like_a_star() -> None:
    m = pat.path_patterns(["/t/{tenant}/{**}"])
    assert m.matches("/t/acme/") and m.matches("/t/acme/x/y")
    assert not m.matches("/t/acme") and not m.matches("/t//x")


def test_captures_are_decoded_and_come_from_the_first_matching_pattern() -> None:
    c = pat.PathCaptures(["/t/{tenant}/{**}", "/{tenant}/{**}"])
    assert c.capture("/t/ac%20me/x") == {"tenant": "ac me"}
    assert c.capture("/u/x") == {"tenant": "u"}
    assert c.capture("/t/caf%C3%A9/") == {"tenant": "café"}
    assert c.capture("/t/%FF/") is None  # not UTF-8: binds nothing (the condition fails)
    assert c.capture("/nothing") is None


def test_a_first_segment_capture_is_not_indexed() -> None:
    assert pat.path_first_segment("/{org}/b") is None
    assert pat.path_first_segment("/t/{tenant}") == "t"
