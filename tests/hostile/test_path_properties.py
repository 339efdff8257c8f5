"""Properties of `authz.request.paths.normalize_path` on generated hostile spellings.

- it agrees with an independent reference (tests/hostile/reference.py: RFC 3986 section 5.2.4
  remove_dot_segments after docs/policy.md's decoding and refusal rules);
- a result is canonical: starts with '/', no '//', no '.' or '..' segment, nothing of a query or
  fragment, no escape of an unreserved character left, and normalizing it again changes nothing;
- on any text at all it returns or raises InvalidPath, nothing else.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from authz.errors import InvalidPath
from authz.request.paths import normalize_path
from tests.hostile._hyp import HOSTILE
from tests.hostile.reference import UNRESERVED, Invalid, reference_normalize, remove_dot_segments

# Pieces an attacker spells paths with: dot segments in every encoding and case, parameters,
# escapes of reserved and unreserved characters, double encoding, odd bytes.
_ATOMS = [
    "",
    ".",
    "..",
    "...",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "..;",
    ".;",
    "..;x=1",
    "%2e%2e;",
    ";",
    ";a",
    "a;b",
    "a",
    "b",
    "admin",
    "Admin",
    "%61dmin",
    "%41",
    "%7e",
    "%7E",
    "~",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%252e",
    "%252f",
    "%25",
    "%",
    "%g1",
    "%2",
    "%00",
    "%0a",
    "%7f",
    "%20",
    "%3b",
    "%3B",
    "%3f",
    "%23",
    "%C3%A9",
    "é",
    "\u2025",
    "\uff0e",
    "a b",
    "{x}",
    "*",
    ":",
    "@",
    "!",
    "$",
    "&",
    "'",
    "(",
    ")",
    "+",
    ",",
    "=",
]
_SEGMENT_CHARS = st.sampled_from(list("abAB.-_~%;:@!$&'()*+,=0123456789fFeE2"))


def _segment() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_ATOMS), st.text(_SEGMENT_CHARS, max_size=6))


@st.composite
def raw_paths(draw: st.DrawFn, *, controls: bool = False) -> str:
    """A request target: a hostile path, maybe a query and a fragment."""
    segments = draw(st.lists(_segment(), max_size=10))
    lead = draw(st.sampled_from(["/", "/", "/", "//", "///", ""]))
    path = lead + "/".join(segments)
    if controls and draw(st.booleans()):
        at = draw(st.integers(0, len(path)))
        path = (
            path[:at]
            + draw(st.sampled_from(["\x00", "\t", "\n", "\r", "\x7f", "\x85", "\\"]))
            + path[at:]
        )
    if draw(st.booleans()):
        path += "?" + draw(st.text(st.sampled_from(list("a=b&/.%2e?;#")), max_size=8))
    if draw(st.booleans()):
        path += "#" + draw(st.text(st.sampled_from(list("a/../?.")), max_size=6))
    return path


def _outcome(function: object, raw: str) -> tuple[str, ...]:
    try:
        path, query = function(raw)  # type: ignore[operator]
    except (InvalidPath, Invalid):
        return ("invalid",)
    return ("ok", path, query)


@HOSTILE
@given(raw_paths(controls=True))
def test_agrees_with_the_rfc_3986_reference(raw: str) -> None:
    expected = _outcome(reference_normalize, raw)
    note(f"reference: {expected}")
    assert _outcome(normalize_path, raw) == expected


def _assert_canonical(path: str) -> None:
    assert path.startswith("/")
    assert "//" not in path
    assert "/./" not in path and "/../" not in path
    assert not path.endswith(("/.", "/.."))
    assert "?" not in path and "#" not in path
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    # No escape of an unreserved character survives (it would be a second spelling), and every
    # escape left is upper-case.
    for escape in re.findall(r"%(..)", path):
        assert chr(int(escape, 16)) not in UNRESERVED
        assert escape == escape.upper()


@HOSTILE
@given(raw_paths(controls=True))
def test_result_is_canonical_and_idempotent(raw: str) -> None:
    try:
        path, _query = normalize_path(raw)
    except InvalidPath:
        return
    _assert_canonical(path)
    assert normalize_path(path) == (path, "")


@HOSTILE
@given(st.text(max_size=64))
def test_any_text_is_normalized_or_refused(raw: str) -> None:
    # Arbitrary unicode, surrogates excluded by st.text: nothing but InvalidPath may escape.
    try:
        path, _query = normalize_path(raw)
    except InvalidPath:
        return
    _assert_canonical(path)


@HOSTILE
@given(st.text(st.sampled_from(list("/.a")), max_size=20))
def test_never_climbs_above_root(raw: str) -> None:
    """Any number of '..' never leaves '/': the result is a suffix-free resolution of '/'."""
    path, _ = normalize_path("/" + raw)
    assert path.startswith("/")
    assert path == remove_dot_segments(re.sub("/+", "/", "/" + raw))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # RFC 3986 section 5.2.4's own examples, rooted.
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
    ],
)
def test_reference_follows_the_rfc_examples(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected
    assert normalize_path(path)[0] == expected
