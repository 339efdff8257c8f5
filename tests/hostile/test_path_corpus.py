"""The path-trick corpus: each row names the attack it stands for and the expected outcome, the
normalized path or 400 `invalid_path`.

Sources: Envoy's path normalization tests (`normalize_path`, `merge_slashes`,
`path_with_escaped_slashes_action`), Istio's authorization policy normalization notes
(`BASE`, `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`), Orange Tsai's "Breaking Parser Logic"
(`/..;/` on Tomcat), PortSwigger's path traversal and access control bypass notes, CVE-2021-28164
(Jetty `%2e`), CVE-2021-34429 (Jetty `%u002e`, `.%00.`). The rows are our own.

Rows marked RISK are what docs/policy.md specifies today but an upstream could read differently;
they pin the current contract (changing them needs a decision on the issue) and are listed in
the report of issue 7.
"""

from __future__ import annotations

import pytest

from authz.errors import InvalidPath
from authz.request.paths import normalize_path
from tests.hostile.reference import reference_normalize

INVALID = "400 invalid_path"

# (attack, raw :path, expected normalized path or INVALID)
CORPUS: list[tuple[str, str, str]] = [
    # -- encoded dots ------------------------------------------------------------------------
    ("encoded dot-dot", "/public/%2e%2e/admin", "/admin"),
    ("encoded dot-dot, mixed case", "/public/%2E%2e/admin", "/admin"),
    ("half-encoded dot-dot", "/public/.%2E/admin", "/admin"),
    ("half-encoded dot-dot, other half", "/public/%2e./admin", "/admin"),
    ("encoded single dot", "/public/%2e/admin", "/public/admin"),
    ("encoded dot as the last segment", "/admin/%2e", "/admin/"),
    ("Jetty CVE-2021-28164: %2e segment", "/%2e/WEB-INF/web.xml", "/WEB-INF/web.xml"),
    ("IIS %u escape (CVE-2021-34429)", "/public/%u002e%u002e/admin", INVALID),
    ("dot, NUL, dot (CVE-2021-34429)", "/public/.%00./admin", INVALID),
    ("overlong UTF-8 dot, not decoded", "/public/%c0%ae%c0%ae/admin", "/public/%C0%AE%C0%AE/admin"),
    (
        "double-encoded dot-dot, decoded once only",
        "/public/%252e%252e/admin",
        "/public/%252e%252e/admin",
    ),
    ("double-encoded slash, decoded once only", "/public%252fadmin", "/public%252fadmin"),
    ("encoded percent then hex", "/%25%32%65", "/%252e"),
    # -- encoded slashes and backslashes ---------------------------------------------------------
    ("encoded slash", "/public%2fadmin", INVALID),
    ("encoded slash, upper case", "/public/..%2Fadmin", INVALID),
    ("encoded backslash", "/public/..%5cadmin", INVALID),
    ("encoded backslash, upper case", "/public%5C..%5Cadmin", INVALID),
    ("raw backslash traversal (IIS, Windows)", "/public\\..\\admin", INVALID),
    ("raw backslash alone", "/admin\\", INVALID),
    ("backslash in the query", "/public?x=\\", INVALID),
    # -- slashes ---------------------------------------------------------------------------------
    ("double leading slash", "//admin", "/admin"),
    ("triple slashes", "///admin///users", "/admin/users"),
    ("slashes merged before dot-dot (nginx merge_slashes)", "/public//../admin", "/admin"),
    ("empty segments then dot-dot", "/a///..", "/"),
    ("only slashes", "////", "/"),
    # -- dot segments ---------------------------------------------------------------------------
    ("plain traversal", "/public/../admin", "/admin"),
    ("traversal above the root", "/../../../../admin", "/admin"),
    ("trailing dot segment", "/admin/.", "/admin/"),
    ("trailing dot-dot segment", "/admin/users/..", "/admin/"),
    ("dot-dot to the root", "/admin/..", "/"),
    ("three dots are a name", "/public/.../admin", "/public/.../admin"),
    ("dot suffix is a name (RISK: IIS strips trailing dots)", "/admin.", "/admin."),
    ("dot-dot prefix is a name", "/public/..admin", "/public/..admin"),
    # -- path parameters --------------------------------------------------------------------------
    ("Tomcat /..;/ (Breaking Parser Logic)", "/public/..;/admin", INVALID),
    ("Tomcat /..;/ at the root", "/..;/admin", INVALID),
    ("Tomcat /.;/", "/.;/admin", INVALID),
    ("Tomcat ..;param", "/public/..;jsessionid=x/admin", INVALID),
    ("encoded dot-dot with a param", "/public/%2e%2e;/admin", INVALID),
    (
        "encoded semicolon after dot-dot (RISK: kept as a name)",
        "/public/..%3b/admin",
        "/public/..%3B/admin",
    ),
    (
        "param on a name (kept; deny rules also see /admin, "
        "tests/unit/policy/decide/test_path_params.py)",
        "/admin;x=1",
        "/admin;x=1",
    ),
    ("param hiding a directory (kept; deny rules also see /admin/x)", "/admin;/x", "/admin;/x"),
    ("jsessionid", "/public;jsessionid=abc/x", "/public;jsessionid=abc/x"),
    # -- NUL and control characters ----------------------------------------------------------------
    ("NUL byte", "/admin\x00.png", INVALID),
    ("encoded NUL (extension truncation)", "/admin%00.png", INVALID),
    ("CRLF injection", "/admin%0d%0aSet-Cookie:x", INVALID),
    ("raw LF", "/admin\nx", INVALID),
    ("raw TAB", "/admin\tx", INVALID),
    ("encoded TAB", "/admin%09", INVALID),
    ("DEL", "/admin\x7f", INVALID),
    ("encoded DEL", "/admin%7F", INVALID),
    ("C1 control NEL", "/admin\x85", INVALID),
    ("control in the fragment", "/public#\x00", INVALID),
    # -- query strings and fragments --------------------------------------------------------------
    ("query hides traversal", "/public?/../admin", "/public"),
    ("fragment hides traversal", "/public#/../admin", "/public"),
    ("fragment before query", "/admin#?x", "/admin"),
    ("query kept apart", "/admin?x=1", "/admin"),
    ("empty query", "/admin?", "/admin"),
    ("encoded question mark is path", "/admin%3f.png", "/admin%3F.png"),
    ("encoded hash is path", "/admin%23x", "/admin%23x"),
    # -- escapes ---------------------------------------------------------------------------------
    ("encoded unreserved letter", "/%61dmin", "/admin"),
    ("encoded unreserved, upper case", "/%41DMIN", "/ADMIN"),
    ("encoded tilde and dash", "/%7euser/a%2Db", "/~user/a-b"),
    ("lower-case reserved escape upper-cased", "/a%3ab", "/a%3Ab"),
    ("truncated escape", "/admin%2", INVALID),
    ("lone percent", "/admin%", INVALID),
    ("non-hex escape", "/admin%zz", INVALID),
    ("percent-percent", "/%%32%65", INVALID),
    ("space escape kept", "/a%20b", "/a%20b"),
    # -- case and unicode --------------------------------------------------------------------------
    ("upper case (RISK: case-insensitive upstreams)", "/ADMIN", "/ADMIN"),
    ("unicode letter", "/\u00e1dmin", "/\u00e1dmin"),
    (
        "fullwidth dot-dot (RISK: NFKC upstreams read ..)",
        "/\uff0e\uff0e/admin",
        "/\uff0e\uff0e/admin",
    ),
    ("two-dot leader", "/\u2025/admin", "/\u2025/admin"),
    ("percent-encoded UTF-8 kept encoded", "/caf%C3%A9", "/caf%C3%A9"),
    ("line separator is not a control", "/a\u2028b", "/a\u2028b"),
    # -- not a path at all -------------------------------------------------------------------------
    ("empty", "", INVALID),
    ("relative", "admin", INVALID),
    ("asterisk-form", "*", INVALID),
    ("absolute-form", "http://evil.example/admin", INVALID),
    ("query only", "?x=/admin", INVALID),
]


@pytest.mark.parametrize(("attack", "raw", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_path_trick(attack: str, raw: str, expected: str) -> None:
    if expected == INVALID:
        with pytest.raises(InvalidPath) as caught:
            normalize_path(raw)
        assert (caught.value.reason, caught.value.status) == ("invalid_path", 400)
    else:
        path, _query = normalize_path(raw)
        assert path == expected, attack
        # Normal form is a fixed point.
        assert normalize_path(path)[0] == path


@pytest.mark.parametrize(("attack", "raw", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_reference_agrees_with_the_corpus(attack: str, raw: str, expected: str) -> None:
    """The corpus is also a check on the reference the property tests trust."""
    try:
        got = reference_normalize(raw)[0]
    except Exception:
        got = INVALID
    assert got == expected, attack
