"""The one check for every value we put into a header sent upstream.

Used by identity (an `iss`/`sub` that fails it refuses the token) and by the engine (a
claims_to_headers value that fails it is not sent), so the two can never disagree.
"""

from __future__ import annotations

import re

__all__ = ["is_header_value"]

# RFC 9110 section 5.5: field-value = *field-content; field-content = field-vchar
# [ 1*( SP / HTAB / field-vchar ) field-vchar ]; field-vchar = VCHAR / obs-text. Non-ASCII text
# goes out as UTF-8 (obs-text bytes); CR, LF, NUL and the other controls are what Envoy refuses
# (its codecs answer 503). Lone surrogates (json.loads lets them through) cannot be encoded.
_FIELD_VCHAR = "\x21-\x7e\x80-\ud7ff\ue000-\U0010ffff"
_HEADER_VALUE = re.compile(f"[{_FIELD_VCHAR}]+(?:[\t ]+[{_FIELD_VCHAR}]+)*")


def is_header_value(text: str) -> bool:
    """True when `text` can be sent as an HTTP header value exactly as it is (RFC 9110
    field-value: no control characters, no leading or trailing whitespace). The empty text is
    one (callers remove the header instead). The one check for every value we put in a header."""
    return not text or _HEADER_VALUE.fullmatch(text) is not None
