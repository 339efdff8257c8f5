"""An independent reference for path normalization, written from docs/policy.md and RFC 3986 only.

It is deliberately the slow, literal reading of the texts (an input buffer and an output buffer,
as RFC 3986 section 5.2.4 describes the algorithm) and shares no code with
`authz.request.paths`, so the property tests can compare the two on any input.
"""

from __future__ import annotations

import re

# RFC 3986 section 2.3.
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEXDIGITS = "0123456789abcdefABCDEF"


class Invalid(Exception):
    """The reference refuses the path (what the service answers with 400 invalid_path)."""


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, step by step (rules A to E of the text)."""
    inp = path
    out = ""
    while inp:
        if inp.startswith("../"):  # A
            inp = inp[3:]
        elif inp.startswith("./"):  # A
            inp = inp[2:]
        elif inp.startswith("/./"):  # B
            inp = "/" + inp[3:]
        elif inp == "/.":  # B
            inp = "/"
        elif inp.startswith("/../"):  # C
            inp = "/" + inp[4:]
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp == "/..":  # C
            inp = "/"
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp in (".", ".."):  # D
            inp = ""
        else:  # E: the first segment, with its leading "/", moves to the output
            start = 1 if inp.startswith("/") else 0
            end = inp.find("/", start)
            end = len(inp) if end < 0 else end
            out += inp[:end]
            inp = inp[end:]
    return out


def _is_control(char: str) -> bool:
    # C0, DEL and C1 controls (Unicode category Cc).
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _decode_unreserved(path: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or pair[0] not in _HEXDIGITS or pair[1] not in _HEXDIGITS:
            raise Invalid("bad escape")
        byte = int(pair, 16)
        if byte in (0x2F, 0x5C):
            raise Invalid("encoded slash or backslash")
        if byte < 0x20 or byte == 0x7F:
            raise Invalid("encoded control")
        decoded = chr(byte)
        out.append(decoded if decoded in UNRESERVED else "%" + pair.upper())
        i += 3
    return "".join(out)


def reference_normalize(raw: str) -> tuple[str, str]:
    """docs/policy.md "Paths" read literally. Raises Invalid."""
    if any(_is_control(c) for c in raw) or "\\" in raw:
        raise Invalid("control character or backslash")
    path = raw.split("#", 1)[0]
    path, _, query = path.partition("?")
    if not path.startswith("/"):
        raise Invalid("relative")
    path = _decode_unreserved(path)
    for segment in path.split("/"):
        if ";" in segment and segment.split(";", 1)[0] in (".", ".."):
            raise Invalid("dot segment with ;param")
    merged = re.sub("/+", "/", path)
    return remove_dot_segments(merged), query
