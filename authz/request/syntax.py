"""Small grammars that configuration, policy and the wire layer all read: one definition each.

Pure (no I/O, no imports from the rest of the package) so the policy core can use it too.
"""

from __future__ import annotations

import re

# RFC 9110 section 5.6.2 `tchar`, as the body of a regex character class (`-` last: a literal
# in Python's and JSON Schema's regex dialects). Methods and header names are tokens of these.
_SYMBOLS_AND_DIGITS = r"!#$%&'*+.^_`|~0-9"
TCHAR = _SYMBOLS_AND_DIGITS + "A-Za-z-"
UPPER_TCHAR = _SYMBOLS_AND_DIGITS + "A-Z-"  # a method as a policy writes it
TOKEN = re.compile(f"[{TCHAR}]+")

SPIFFE_PREFIX = "spiffe://"


def without_spiffe_prefix(text: str) -> str:
    """`spiffe://td/path` -> `td/path`; any other text unchanged."""
    return text.removeprefix(SPIFFE_PREFIX)
