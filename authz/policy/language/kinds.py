"""Value kinds: how one policy field's value is read, checked and described in JSON Schema.

A field declaration (`authz.policy.language.fields`) names its kind; the validator reads the value
with `kind.read` (problems at FILE:LINE) and `authz schema` writes `kind.schema(description)`, so
what the validator accepts and what an editor is told come from the same line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.policy.language import patterns as pat
from authz.policy.language.check import Checker
from authz.policy.language.yaml_source import YNode, YScalar
from authz.request.syntax import TCHAR, UPPER_TCHAR

Schema = dict[str, Any]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_PATTERN = f"^{NAME.pattern}$"
# A path capture `{name}` (authz.policy.language.patterns), as `equals_capture` names it.
CAPTURE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# A `*` only as the whole value, its first or its last character, not both.
STAR_PATTERN = r"^(\*|\*[^*]+|[^*]+\*?)$"
HOST_PATTERN = (
    r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"  # first label, maybe after "*."
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$"  # then ".label" any number of times
)
METHOD_PATTERN = f"^[{UPPER_TCHAR}]+$"
HEADER_PATTERN = f"^:?[{TCHAR}]+$"
NONBLANK = r"\S"


def text(description: str, pattern: str = NONBLANK) -> Schema:
    """A non-blank string (optionally matching `pattern`)."""
    return {"type": "string", "pattern": pattern, "description": description}


def listed(description: str, item: Schema) -> Schema:
    """A non-empty list of `item`."""
    return {"type": "array", "minItems": 1, "items": item, "description": description}


Reader = Callable[[Checker, YNode, str], Any]


@dataclass(frozen=True, slots=True)
class ValueKind:
    """`read(checker, node, key)` returns the checked value, or None after reporting a problem.

    `schema(description)` is the JSON Schema of a field of this kind. `flag` kinds are
    `true`-only booleans whose `not_` form is the opposite (`authenticated`).
    """

    read: Reader
    schema: Callable[[str], Schema]
    flag: bool = False


def strings(
    item: str, pattern: str = NONBLANK, check: Callable[[str], Any] | None = None
) -> ValueKind:
    """A non-empty list of strings, each through `check` (ValueError = a problem)."""
    return ValueKind(
        read=lambda c, node, key: c.str_list(node, key, check),
        schema=lambda description: listed(description, text(item, pattern)),
    )


def _read_flag(c: Checker, node: YNode, key: str) -> bool | None:
    value = c.boolean(node, key)
    if value is False:
        other = key[4:] if key.startswith("not_") else f"not_{key}"
        c.err(node.line, f"{key} can only be true; write `{other}: true` for the opposite")
        return None
    return value


def _read_names(c: Checker, node: YNode, key: str) -> tuple[str, ...] | None:
    """One name or a list of names (`role: reader` or `role: [reader, writer]`)."""
    if isinstance(node, YScalar):
        one = c.string(node, key)
        return (one,) if one is not None else None
    return c.str_list(node, key)


STAR = strings("A pattern.", STAR_PATTERN, pat.check_star_pattern)
TEXT = strings("A value.")
IP_BLOCKS = strings("An IP address or CIDR.", r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$", pat.parse_ip_block)
METHODS = strings("An HTTP method in upper case, or `*` for any.", METHOD_PATTERN, pat.check_method)
PATHS = strings("A path pattern, in normal form.", r"^[/*]", pat.check_path_pattern)
HOSTS = strings("A host name or `*.suffix`.", HOST_PATTERN, pat.check_host_pattern)
PORTS = ValueKind(
    read=lambda c, node, key: c.ports(node, key),
    schema=lambda description: listed(
        description,
        {
            "description": "A port number, 1-65535.",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "pattern": r"^[0-9]{1,5}$"},
            ],
        },
    ),
)
NAMES = ValueKind(
    read=_read_names,
    schema=lambda description: {
        "description": description,
        "anyOf": [text("A name.", NAME_PATTERN), listed("Names.", text("A name."))],
    },
)
FLAG = ValueKind(
    read=_read_flag,
    schema=lambda description: {"const": True, "description": description},
    flag=True,
)
