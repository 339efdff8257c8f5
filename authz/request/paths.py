"""Path normalization (docs/policy.md, "Paths").

Policies are matched against one canonical form of the path, so that two spellings of the same
resource cannot be treated differently by us and by the upstream. Anything the upstream might
read differently from us (encoded slashes, backslashes, `;param` dot segments, control
characters) is refused with `InvalidPath` (400, reason `invalid_path`) instead of guessed at.

Order of the steps, and why:
1. cut the fragment (`#...`), then the query (`?...`): neither is part of the path;
2. refuse control characters and a raw `\\` anywhere in what Envoy sent;
3. decode escapes of unreserved characters (RFC 3986 section 2.3: they are equivalent to the
   character), upper-case the hex of all others (section 6.2.2.1), refuse `%2F`/`%5C` and
   encoded control characters;
4. refuse a segment that is `.` or `..` once a `;param` suffix is cut (Tomcat/Spring do so);
5. merge `//` and resolve `.`/`..` (RFC 3986 section 5.2.4), never above `/`. Slashes are
   merged before dots are resolved, as nginx does with `merge_slashes on`.
"""

from __future__ import annotations

import functools
import re

from authz.errors import InvalidPath

# RFC 3986 section 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")

# A path that needs no work: starts with '/', only printable ASCII that is neither '%', '\',
# '?', '#' nor ';', and (checked separately) no '//' and no segment starting with '.'.
_CLEAN = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,=:@/{}\[\]|^`\"<> ]*").fullmatch
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]").search


def normalize_path(raw: str) -> tuple[str, str]:
    """Return (normalized path, query string without '?'); raise InvalidPath when unsafe.

    >>> normalize_path("/a/./b/../c%41?x=1#frag")
    ('/a/cA', 'x=1')
    """
    if len(raw) <= _CACHED_PATH_CHARS:
        return _normalize_cached(raw)
    return _normalize(raw)


def _normalize(raw: str) -> tuple[str, str]:
    # Fast path: the common clean path is returned unchanged.
    if _CLEAN(raw) is not None and "//" not in raw and "/." not in raw:
        return raw, ""
    return _normalize_slow(raw)


# Clients repeat their paths, and a check normalizes its path at least once (twice when a
# condition reads `:path`): the answer for a short path is remembered. Paths are
# client-controlled, so the cache is bounded in entries and in key length (at most about
# 4096 * 256 characters held); a refused path raises and is never cached.
_CACHED_PATHS = 4096
_CACHED_PATH_CHARS = 256
_normalize_cached = functools.lru_cache(maxsize=_CACHED_PATHS)(_normalize)


def _normalize_slow(raw: str) -> tuple[str, str]:
    if _CONTROL(raw) is not None:
        raise InvalidPath("control character in path")
    if "\\" in raw:
        raise InvalidPath("backslash in path")
    path = raw
    hash_at = path.find("#")
    if hash_at >= 0:
        path = path[:hash_at]
    query = ""
    q_at = path.find("?")
    if q_at >= 0:
        path, query = path[:q_at], path[q_at + 1 :]
    if not path.startswith("/"):
        raise InvalidPath("path does not start with '/'")
    if "%" in path:
        path = _decode(path)
    return _resolve(path.split("/")[1:]), query


def _decode(path: str) -> str:
    """Decode unreserved escapes, upper-case the others, refuse the dangerous ones."""
    out: list[str] = []
    start = 0
    at = path.find("%")
    while at >= 0:
        out.append(path[start:at])
        hex2 = path[at + 1 : at + 3]
        if len(hex2) != 2 or hex2[0] not in _HEX or hex2[1] not in _HEX:
            raise InvalidPath("invalid percent escape in path")
        code = int(hex2, 16)
        if code in (0x2F, 0x5C):
            raise InvalidPath("encoded '/' or '\\' in path")
        if code < 0x20 or code == 0x7F:
            raise InvalidPath("encoded control character in path")
        char = chr(code)
        out.append(char if char in _UNRESERVED else "%" + hex2.upper())
        start = at + 3
        at = path.find("%", start)
    out.append(path[start:])
    return "".join(out)


def _resolve(segments: list[str]) -> str:
    """Merge empty segments and resolve dot segments (RFC 3986 section 5.2.4)."""
    kept: list[str] = []
    last = len(segments) - 1
    trailing = False
    for i, seg in enumerate(segments):
        if ";" in seg and seg.split(";", 1)[0] in (".", ".."):
            raise InvalidPath("dot segment with a ';' parameter in path")
        if seg == "..":
            if kept:
                kept.pop()
        elif seg not in ("", "."):
            kept.append(seg)
            continue
        # '.', '..' and '' as the last segment leave a directory: the path ends with '/'.
        trailing = i == last
    if trailing and kept:
        return "/" + "/".join(kept) + "/"
    return "/" + "/".join(kept)


def cut_params(path: str) -> str:
    """`path` with the `;parameter` suffix of *every* segment cut (`/api;v=1/admin;x` ->
    `/api/admin`): how Tomcat, Jetty and Spring route it."""
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def path_readings(path: str) -> tuple[str, ...]:
    """Every reading of a normalized path (docs/policy.md, "One rule for ambiguous requests"):
    the path as sent and, when a segment carries a `;parameter`, the path with them cut."""
    if ";" not in path:
        return (path,)
    cut = cut_params(path)
    return (path,) if cut == path else (path, cut)


def target_readings(target: str) -> tuple[str, ...]:
    """Every reading of a request target (the `:path` pseudo-header: path and query): as sent
    and, for each reading of its normalized path, that path with the query as sent.

    Envoy normalizes `:path` before ext_authz sees it (`normalize_path`, `merge_slashes`);
    nginx's `$request_uri` and Traefik's `X-Forwarded-Uri` are the target as the client sent
    it, which the upstream behind them receives too. So a `:path` condition reads both, under
    the rule for ambiguous requests: `/%61dmin` is `/admin` to a deny on `:path` at every door.
    A target that cannot be normalized has only the reading as sent: the doors refuse such a
    request (`invalid_path`) before any condition reads it."""
    try:
        path, _ = normalize_path(target)
    except InvalidPath:
        return (target,)
    end = min((at for at in (target.find("?"), target.find("#")) if at >= 0), default=len(target))
    rest = target[end:]
    readings = dict.fromkeys((target, *(reading + rest for reading in path_readings(path))))
    return tuple(readings)
