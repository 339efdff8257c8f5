"""Reading YAML nodes into checked values, every problem a `Problem` at the node's line.

The section validators (`validate_file`, `validate_rules`, `validate_auth`) build on `Checker`;
the field declarations (`fields`) name which reader each field's value goes through.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from authz.errors import Problem
from authz.policy.language.yaml_source import YMap, YNode, YScalar, YSeq

T = TypeVar("T")


class _Section(Protocol):
    """A declared mapping (`authz.policy.language.sections.Section`)."""

    @property
    def what(self) -> str: ...

    @property
    def names(self) -> frozenset[str]: ...


class Checker:
    """Collects the problems of one file. `base_dir` is the file's directory: per-field checks
    that read files next to the policy (`jwks_file`) resolve against it."""

    def __init__(self, file: str, base_dir: str):
        self.file = file
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        # Local files the policy refers to (a `jwks_file`), as (absolute path, line): checkers
        # read no file, so the loader checks these and puts their content in the revision.
        self.local_files: list[tuple[str, int]] = []

    def err(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def mapping(self, node: YNode, what: str) -> YMap | None:
        if not isinstance(node, YMap):
            self.err(node.line, f"{what} must be a mapping, not {kind_of(node)}")
            return None
        return node

    def section(self, node: YNode, section: _Section) -> YMap | None:
        """`node` as the mapping `section` declares, its unknown keys reported."""
        m = self.mapping(node, section.what)
        if m is not None:
            self.fields(m, section.names, section.what)
        return m

    def required(
        self, m: YMap, key: str, message: str, read: Callable[[YNode, str], T | None]
    ) -> T | None:
        """`read` of the value under `key`; `message` (at the mapping's line) when it is absent."""
        node = m.items.get(key)
        if node is None:
            self.err(m.line, message)
            return None
        return read(node, key)

    def fields(self, node: YMap, allowed: Iterable[str], what: str) -> None:
        """Report every key of `node` that is not in `allowed`, with a suggestion."""
        known = sorted(allowed)
        for key, line in node.key_lines.items():
            if key not in known:
                self.err(line, unknown_field(key, known, what))

    def string(self, node: YNode, what: str) -> str | None:
        if not isinstance(node, YScalar) or not isinstance(node.value, str):
            self.err(node.line, f"{what} must be a string, not {kind_of(node)}")
            return None
        if not node.value.strip():
            self.err(node.line, f"{what} must not be empty")
            return None
        return node.value

    def boolean(self, node: YNode, what: str) -> bool | None:
        if not isinstance(node, YScalar) or not isinstance(node.value, bool):
            self.err(node.line, f"{what} must be true or false, not {kind_of(node)}")
            return None
        return node.value

    def seq(self, node: YNode, what: str) -> tuple[YNode, ...] | None:
        if not isinstance(node, YSeq):
            self.err(node.line, f"{what} must be a list, not {kind_of(node)}")
            return None
        if not node.items:
            self.err(node.line, f"{what} must not be an empty list")
            return None
        return node.items

    def str_list(
        self, node: YNode, what: str, check: Callable[[str], Any] | None = None
    ) -> tuple[str, ...] | None:
        """A non-empty list of non-empty strings; `check` may raise ValueError or return a
        replacement value (e.g. the lower-cased form)."""
        items = self.seq(node, what)
        if items is None:
            return None
        out = [self.checked(item, what, check) for item in items]
        return None if any(s is None for s in out) else tuple(s for s in out if s is not None)

    def checked(self, node: YNode, what: str, check: Callable[[str], Any] | None) -> str | None:
        """One non-empty string through `check` (see `str_list`)."""
        s = self.string(node, f"each entry of {what}")
        if s is None or check is None:
            return s
        try:
            replaced = check(s)
        except ValueError as exc:
            self.err(node.line, f"{what}: {exc}")
            return None
        return replaced if isinstance(replaced, str) else s

    def ports(self, node: YNode, what: str) -> tuple[int, ...] | None:
        items = self.seq(node, what)
        if items is None:
            return None
        out: list[int] = []
        for item in items:
            value = item.value if isinstance(item, YScalar) else None
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                self.err(item.line, f"{what}: a port is a number, not {kind_of(item)}")
            elif not 1 <= value <= 65535:
                self.err(item.line, f"{what}: port {value} is out of range (1-65535)")
            else:
                out.append(value)
        return tuple(out) if len(out) == len(items) else None


def kind_of(node: YNode) -> str:
    """What a node is, for messages: `a list`, `a string ('x')`, `a number (3)`."""
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        return f"a number ({v})"
    if isinstance(v, str):
        return f"a string ({v!r})"
    return type(v).__name__


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def line(self) -> int: ...


N = TypeVar("N", bound=_Named)


def unknown_field(key: str, allowed: Iterable[str], what: str) -> str:
    """`unknown field 'acton' in a rule; did you mean 'action'?`, else the known names."""
    known = sorted(allowed)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return f"unknown field {key!r} in {what}{hint}"


def unique(items: Iterable[N | None], err: Callable[[int, str], None], what: str) -> list[N]:
    """The items (None: already reported) with a name not seen before in the file; each repeat
    is reported at its line, naming the first."""
    seen: dict[str, int] = {}
    out: list[N] = []
    for item in items:
        if item is None:
            continue
        if item.name in seen:
            err(item.line, f"duplicate {what} name {item.name!r} (first on line {seen[item.name]})")
            continue
        seen[item.name] = item.line
        out.append(item)
    return out
