"""What a limit counts by: the `key` of a `rate_limits` entry, read from one checked request.

A key is one of the kinds in `KINDS`; `header:`, `claim:` and `context:` take a name. Its value
is read from the `RequestContext` the rules matched (so a limit sees the identity exactly as the
rules did), and is None when the request has none (no token, no such header): such a request is
not counted by that limit. The value never leaves this module raw: `counter_key` hashes it with
the limit's name, so a counter (in the process or in Redis) never holds a token, an API key or a
header value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.claims import nested_claim, scalar_text

if TYPE_CHECKING:  # authz.policy reads these modules: no import cycle at run time
    from authz.policy.decide.context import RequestContext

Read = Callable[["RequestContext", str], "str | None"]


def _claim(ctx: RequestContext, dotted: str) -> str | None:
    # Objects and lists are no key: which element would it be?
    return scalar_text(nested_claim(ctx.claims, dotted)) or None


def _text(value: str | None) -> str | None:
    return value or None


def _source_ip(ctx: RequestContext, _: str) -> str | None:
    ip = ctx.ip  # parsed, so "::1" and "0:0::1" are one key
    return str(ip) if ip is not None else None


# One entry per kind.
_READERS: dict[str, Read] = {
    # The key's principal (`<provider>/<id>`), never the key: a revoked and reissued key with
    # the same id shares its counter.
    "api_key": lambda ctx, _: _text(ctx.api_key_principal),
    "context": lambda ctx, name: ctx.context.get(name) or None,
    "principal": lambda ctx, _: _text(ctx.workload.principal if ctx.workload else None),
    "request_principal": lambda ctx, _: _text(ctx.user.principal if ctx.user else None),
    "source_ip": _source_ip,
    "header": lambda ctx, name: next((v for v in ctx.header_readings(name) if v), None),
    "claim": _claim,
}
KINDS: tuple[str, ...] = (
    "principal",
    "request_principal",
    "api_key",
    "source_ip",
    "header:<name>",
    "claim:<dotted>",
    "context:<key>",
)
# Kinds that take a name after the colon.
NAMED = frozenset({"header", "claim", "context"})


@dataclass(frozen=True, slots=True)
class LimitKey:
    """A parsed `key`: `kind` ("header"), `name` ("x-tenant"; "" for kinds without one)."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @property
    def secret(self) -> bool:
        """The value is a credential or may be one (headers carry tokens too)."""
        return self.kind in ("api_key", "header")

    def read(self, ctx: RequestContext) -> str | None:
        """The key's value (the first of `readings`), None when the request has none."""
        values = self.readings(ctx)
        return values[0] if values else None

    def readings(self, ctx: RequestContext) -> tuple[str, ...]:
        """Every value the key has under the readings of the request, distinct: a header sent
        twice (or a list header) counts under each of its elements, as a rate limit holds
        under any reading (docs/policy.md, "One rule for ambiguous requests"); so a client
        cannot reach a fresh counter by repeating the header or adding an element."""
        if self.kind == "header":
            return tuple(
                dict.fromkeys(v for v in ctx.header_readings(self.name) if v)  # no empty key
            )
        reader = _READERS.get(self.kind)
        value = reader(ctx, self.name) if reader is not None else None
        return (value,) if value is not None else ()


def parse_key(text: str) -> LimitKey:
    """`"header:X-Tenant"` -> LimitKey("header", "x-tenant"). Raises ValueError naming the
    kinds when `text` is not one."""
    kind, sep, name = text.partition(":")
    if kind in NAMED and sep and name.strip():
        name = name.strip()
        return LimitKey(kind, name.lower() if kind == "header" else name)
    if not sep and kind in ("principal", "request_principal", "api_key", "source_ip"):
        return LimitKey(kind)
    raise ValueError(f"key must be one of {', '.join(KINDS)}; got {text!r}")


def supported(key: LimitKey) -> bool:
    """Whether this build can read the key (a kind without a reader is refused at load)."""
    return key.kind in _READERS


def counter_key(limit_name: str, value: str) -> bytes:
    """The counter's name for one key value: 16 bytes of BLAKE2b over the limit's name and the
    value. The raw value is never stored; 128 bits make collisions between keys negligible."""
    # The value is bounded already: by the request limits (authz.config.Limits) or by the size
    # of a verified token.
    data = f"{limit_name}\x00{value}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()
