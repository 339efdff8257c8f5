"""Path pattern matchers: the cheap forms a big policy set is made of."""

from __future__ import annotations

import pytest

from authz.policy.language.patterns import path_patterns


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/", True), ("/api/a", True), ("/api/a/b", True), ("/api", False), ("/apix/a", False)],
)
def test_trailing_double_star_is_a_prefix(path: str, expected: bool) -> None:
    matcher = path_patterns(["/api/{**}"])
    assert matcher.matches(path) is expected
    # no regex to compile: 40,000 of them made a reload spend seconds in re.compile
    assert matcher.template is None


def test_single_star_segments_still_use_the_template() -> None:
    matcher = path_patterns(["/api/{*}/x/{**}"])
    assert matcher.template is not None
    assert matcher.matches("/api/1/x/") and matcher.matches("/api/1/x/y")
    assert not matcher.matches("/api/1/y/") and not matcher.matches("/api//x/")
