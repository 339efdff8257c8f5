"""The query string: the one reader of query parameters (conditions, tokens, API keys, removal).

A parameter's name is compared decoded (`api%5Fkey` is `api_key`, `+` is a space as HTML forms
send it), so every spelling of a name is one parameter and a repeated one keeps all its values:
each value is a reading (docs/policy.md, "One rule for ambiguous requests"). What must be removed
upstream is removed under every spelling as sent (`spellings`): Envoy removes raw names only.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus


def _pairs(raw: str) -> list[tuple[str, str]]:
    """(name as sent, value as sent) of every `name=value` (or bare `name`) of `raw`."""
    pairs = []
    for part in raw.lstrip("?").split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def parse_query(raw: str) -> Mapping[str, tuple[str, ...]]:
    """`{decoded name: decoded values}`; an escape that does not decode as UTF-8 is U+FFFD.
    A bare `name` has the value `""` (`?access_token=` is an empty token, not no token)."""
    found: dict[str, list[str]] = {}
    for name, value in _pairs(raw):
        found.setdefault(unquote_plus(name), []).append(unquote_plus(value))
    return {name: tuple(values) for name, values in found.items()}


def spellings(raw: str, name: str) -> tuple[str, ...]:
    """Every name as sent in `raw` whose decoding is `name`, first seen first."""
    return tuple(dict.fromkeys(sent for sent, _ in _pairs(raw) if unquote_plus(sent) == name))
