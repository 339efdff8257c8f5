"""Path patterns (docs/policy.md, "Path patterns") as RE2 regexes for Envoy's RBAC `url_path`.

Pure string work, no Envoy types. Two views of a request path exist in the engine
(authz/policy/decide/evaluate.py): the path as sent, which every rule sees, and the path with every
`;parameter` cut from its segments, which deny rules see too. `stripped_regex(p)` matches
exactly the paths whose stripped form matches `p`, so the export can give a deny rule the
same second chance the engine gives it, with no Envoy filter of our own.
"""

from __future__ import annotations

import re

# One segment's `;parameter` tail: cut by the engine's stripped view, so any text is fine.
_PARAM = "(?:;[^/]*)?"


def _esc(text: str) -> str:
    # re.escape's output is valid RE2 for the characters a normalized path can hold.
    return re.escape(text)


def _one_segment(seg: str) -> bool:
    """`{*}`, or a capture `{name}` (it matches like `{*}`; only the engine reads the value)."""
    return seg.startswith("{") and seg.endswith("}") and seg != "{**}"


def template_regex(pattern: str) -> str:
    """The full-match regex of a `{*}`/`{name}`/`{**}` template, as the engine builds it."""
    parts: list[str] = []
    for seg in pattern.split("/")[1:]:
        if _one_segment(seg):
            parts.append("[^/]+")
        elif seg == "{**}":
            parts.append(".*")
        else:
            parts.append(_esc(seg))
    return "/" + "/".join(parts)


def stripped_regex(pattern: str) -> str | None:
    """A full-match regex for the paths whose `;param`-stripped form matches `pattern`.

    None when no path can: the stripped form holds no `;`, so a pattern with one never matches
    it. Each stripped segment `s` is `s` followed by an optional `;...` in the path as sent.
    """
    if pattern == "*":
        return ".*"
    if ";" in pattern:
        return None
    if pattern.startswith("*"):
        return _suffix(pattern[1:])
    if pattern.endswith("*"):
        body = pattern[:-1]
        *whole, partial = body.split("/")[1:]
        # The partial last segment has no ';', so the path as sent starts with it too.
        head = "".join("/" + _segment(s) for s in whole)
        return f"{head}/{_esc(partial)}.*"
    return "".join("/" + _segment(s) for s in pattern.split("/")[1:])


def _segment(seg: str) -> str:
    if _one_segment(seg):
        return f"[^/;]+{_PARAM}"
    if seg == "{**}":
        return ".*"
    return _esc(seg) + _PARAM


def _suffix(suffix: str) -> str:
    first, *rest = suffix.split("/")
    tail = "".join("/" + _esc(s) + _PARAM for s in rest)
    if not first:
        # The suffix starts at a slash: whatever comes before it (params included) is free.
        return ".*" + tail
    # `first` ends some stripped segment: what precedes it in that segment has no ';'.
    return f".*/[^/;]*{_esc(first)}{_PARAM}{tail}"
