"""Hand-made JWTs no honest library produces: raw headers and payloads (bytes or JSON text,
duplicate keys, invalid UTF-8), chosen algorithms and signatures.

`forge(header, payload, key=..., alg=...)` signs the exact bytes it is given, so a test can make
a token whose signature is *valid* for a trusted key and whose content is hostile (unknown
`crit`, `exp` as a string, a claim nested thousands deep): only the content can then be what
refuses it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from jwt.algorithms import get_default_algorithms

from tests.support.tokens import SigningKey


def b64(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(part: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    return json.dumps(part).encode()


def forge(
    header: bytes | str | dict[str, Any],
    payload: bytes | str | dict[str, Any],
    *,
    key: SigningKey | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS of exactly these header and payload bytes.

    With `key`, the signature is real (made with the key's algorithm over the exact segments);
    else `signature` is used as it is (default: empty).
    """
    signing_input = b64(_raw(header)) + "." + b64(_raw(payload))
    if key is not None:
        algorithm = get_default_algorithms()[key.alg]
        prepared = algorithm.prepare_key(key.private)
        signature = algorithm.sign(signing_input.encode(), prepared)
    return signing_input + "." + b64(signature or b"")
