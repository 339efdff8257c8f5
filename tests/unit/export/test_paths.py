"""The deny rules' `;param` view as a regex: exactly the engine's
(authz/policy/decide/evaluate.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from authz.export.paths import stripped_regex, template_regex
from authz.policy.language.patterns import path_patterns

PATTERNS = [
    "/admin", "/admin/{**}", "/admin*", "/api/orders/{*}", "/api/{*}/items", "/api/{**}",
    "*.json", "*/x.json", "*s/a", "/a;b", "*;b", "/", "/a/", "/*", "*", "/api/orders*",
    "/a.b/{*}", "/api/{tenant}/items", "/{seg}/{**}",
]  # fmt: skip
SEGMENTS = ["admin", "admin;x=1", "api", "api;j", "orders", "o;", ";x", "", "x.json",
            "x.json;v=1", "items", "a.b", "a;b", "s", "a"]  # fmt: skip


def _paths() -> list[str]:
    out = []
    for n in range(1, 4):
        for segs in itertools.product(SEGMENTS, repeat=n):
            out.append("/" + "/".join(segs))
    return out


def _engine_stripped(pattern: str, path: str) -> bool:
    stripped = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    return path_patterns([pattern]).matches(stripped)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_stripped_regex_matches_exactly_the_paths_whose_stripped_form_matches(pattern: str) -> None:
    regex = stripped_regex(pattern)
    compiled = re.compile(regex) if regex is not None else None
    wrong = [
        path
        for path in _paths()
        if (compiled is not None and compiled.fullmatch(path) is not None)
        != _engine_stripped(pattern, path)
    ]
    assert not wrong, (regex, wrong[:10])


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if "{" in p])
def test_template_regex_is_the_engines(pattern: str) -> None:
    compiled = re.compile(template_regex(pattern))
    for path in _paths():
        assert (compiled.fullmatch(path) is not None) == path_patterns([pattern]).matches(path)
