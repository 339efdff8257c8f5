"""Path normalization (docs/policy.md, "Paths")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.errors import InvalidPath
from authz.request import paths
from authz.request.paths import normalize_path

NORMALIZED = [
    # (raw, path, query)
    ("/", "/", ""),
    ("/api/orders", "/api/orders", ""),
    ("/api/orders/", "/api/orders/", ""),
    ("/pkg.Service/Method", "/pkg.Service/Method", ""),
    # query and fragment are cut
    ("/a?x=1&y=2", "/a", "x=1&y=2"),
    ("/a?", "/a", ""),
    ("/a#frag", "/a", ""),
    ("/a?x=1#frag", "/a", "x=1"),
    ("/a#frag?notquery", "/a", ""),
    ("/a?q=/../x", "/a", "q=/../x"),
    # unreserved escapes decoded, others upper-cased
    ("/%41%62c", "/Abc", ""),
    ("/a%2Db%5fc%7E", "/a-b_c~", ""),
    ("/a%3ab", "/a%3Ab", ""),
    ("/a%3Ab", "/a%3Ab", ""),
    ("/a%20b", "/a%20b", ""),
    ("/a%25", "/a%25", ""),
    ("/a%252e%252e", "/a%252e%252e", ""),  # no double decoding
    # merge slashes
    ("//", "/", ""),
    ("/a//b", "/a/b", ""),
    ("///a///b//", "/a/b/", ""),
    # dot segments, RFC 3986 section 5.2.4
    ("/a/b/..", "/a/", ""),
    ("/a/b/.", "/a/b/", ""),
    ("/a/./b", "/a/b", ""),
    ("/a/b/../c", "/a/c", ""),
    ("/a/b/../../c", "/c", ""),
    ("/..", "/", ""),
    ("/../..", "/", ""),
    ("/../a", "/a", ""),
    ("/a/../../../b", "/b", ""),
    ("/.", "/", ""),
    ("/./", "/", ""),
    ("/a/..", "/", ""),
    ("/a//..", "/", ""),  # slashes merged before dots are resolved
    # encoded dots are dots
    ("/%2e%2e/admin", "/admin", ""),
    ("/api/%2E%2E/admin", "/admin", ""),
    ("/api/%2e/x", "/api/x", ""),
    ("/api/.%2e/admin", "/admin", ""),
    # dots inside names are not dot segments
    ("/.well-known/jwks", "/.well-known/jwks", ""),
    ("/a/...", "/a/...", ""),
    ("/a/..b", "/a/..b", ""),
    ("/a/b.", "/a/b.", ""),
    # a ';param' on a normal segment is kept as is
    ("/a;jsessionid=1/b", "/a;jsessionid=1/b", ""),
    ("/a/b;v=1", "/a/b;v=1", ""),
    # non-ASCII (not control) passes
    ("/caf\u00e9", "/caf\u00e9", ""),
]


@pytest.mark.parametrize(("raw", "path", "query"), NORMALIZED)
def test_normalizes(raw: str, path: str, query: str) -> None:
    assert normalize_path(raw) == (path, query)


REJECTED = [
    ("", "start"),
    ("a/b", "start"),
    ("*", "start"),
    ("?x", "start"),
    ("http://host/a", "start"),
    ("/a%2Fb", "encoded"),
    ("/a%2fb", "encoded"),
    ("/a%5Cb", "encoded"),
    ("/a%5cb", "encoded"),
    ("/a\\b", "backslash"),
    ("/a\\..\\admin", "backslash"),
    ("/a\x00b", "control"),
    ("/a%00b", "control"),
    ("/a%0Ab", "control"),
    ("/a\nb", "control"),
    ("/a\tb", "control"),
    ("/a\x7fb", "control"),
    ("/a\x85b", "control"),
    ("/a?x=\x00", "control"),
    ("/a%", "escape"),
    ("/a%4", "escape"),
    ("/a%zz", "escape"),
    ("/a%g1", "escape"),
    ("/a%%41", "escape"),
    ("/..;/admin", "';'"),
    ("/api/..;/admin", "';'"),
    ("/.;x/admin", "';'"),
    ("/api/.;/x", "';'"),
    ("/api/..;jsessionid=1", "';'"),
    ("/%2e%2e;/admin", "';'"),
    ("/.%2e;x/admin", "';'"),
]


@pytest.mark.parametrize(("raw", "why"), REJECTED)
def test_rejects(raw: str, why: str) -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path(raw)
    assert info.value.reason == "invalid_path"
    assert info.value.status == 400
    assert why in str(info.value)


def test_clean_path_is_returned_as_is() -> None:
    raw = "/api/v1/orders/123"
    path, query = normalize_path(raw)
    # Equal, not identical: the answer may be the cached one of an earlier equal string.
    assert path == raw and query == ""


def test_the_answer_cache_is_bounded_and_never_remembers_a_refusal() -> None:
    # Paths are client-controlled: the cache holds at most _CACHED_PATHS entries of at most
    # _CACHED_PATH_CHARS characters each, and a refused path is refused every time.
    info = paths._normalize_cached.cache_info()
    assert info.maxsize == paths._CACHED_PATHS == 4096
    long_raw = "/a/./b" + "/c" * paths._CACHED_PATH_CHARS + "?q=1"
    before = paths._normalize_cached.cache_info().currsize
    assert normalize_path(long_raw) == ("/a/b" + "/c" * paths._CACHED_PATH_CHARS, "q=1")
    assert paths._normalize_cached.cache_info().currsize == before  # too long to be kept
    for _ in range(2):
        with pytest.raises(InvalidPath):
            normalize_path("/a%2Fb")
    short = "/x/../y%41?z"
    assert normalize_path(short) == normalize_path(short) == ("/yA", "z")
    for i in range(paths._CACHED_PATHS + 10):
        normalize_path(f"/p/{i}?q")
    assert paths._normalize_cached.cache_info().currsize == paths._CACHED_PATHS


_SEGMENT = st.text(alphabet="ab.%2eE/;?#~", max_size=12)


@given(_SEGMENT.map(lambda s: "/" + s))
def test_normal_form_is_stable(raw: str) -> None:
    """Normalizing a normalized path changes nothing, and the result has no dot segment."""
    try:
        path, _ = normalize_path(raw)
    except InvalidPath:
        return
    assert normalize_path(path) == (path, "")
    assert path.startswith("/")
    assert "//" not in path
    assert all(seg not in (".", "..") for seg in path.split("/"))
