"""YAML with line numbers: the only module that uses PyYAML.

Policy errors must name the file and line of the offending node, so the document is composed
into nodes (PyYAML's SafeLoader, never the unsafe one) and turned into `YMap` / `YSeq` /
`YScalar`, each carrying its 1-based line. Duplicate mapping keys, which PyYAML silently
accepts (the last one wins), are an error here: a policy author who writes `action` twice
cannot know which one is in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import yaml

from authz.errors import Problem


@dataclass(frozen=True, slots=True)
class YScalar:
    """A scalar with its resolved value (str, int, float, bool, None, ...)."""

    line: int
    value: Any


@dataclass(frozen=True, slots=True)
class YSeq:
    line: int
    items: tuple[YNode, ...]


@dataclass(frozen=True, slots=True)
class YMap:
    """A mapping with string keys; `key_lines` gives the line of each key."""

    line: int
    items: dict[str, YNode]
    key_lines: dict[str, int]


YNode: TypeAlias = YScalar | YSeq | YMap


class YamlProblems(Exception):
    """Raised by `parse_yaml` with every problem found in the document."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def parse_yaml(file: str, text: str) -> YNode | None:
    """Parse one YAML document into located nodes; None for an empty document.

    Raises `YamlProblems` for syntax errors, several documents, non-string or duplicate keys.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise YamlProblems([Problem(file, line, f"YAML: {exc.problem or exc}")]) from exc
        except yaml.YAMLError as exc:
            raise YamlProblems([Problem(file, 1, f"YAML: {exc}")]) from exc
        if node is None:
            return None
        problems: list[Problem] = []
        budget = [_MAX_NODES]
        result = _convert(loader, file, node, problems, 0, budget)
        if budget[0] < 0:
            problems = [Problem(file, 1, f"YAML: more than {_MAX_NODES} nodes (alias expansion?)")]
        if problems:
            raise YamlProblems(problems)
        return result
    finally:
        loader.dispose()


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_MAX_DEPTH = 64  # policy files are shallow; deep nesting is a mistake
_MAX_NODES = 1_000_000  # aliases are expanded: a "billion laughs" document must stop somewhere


def _convert(
    loader: yaml.SafeLoader,
    file: str,
    node: yaml.Node,
    problems: list[Problem],
    depth: int,
    budget: list[int],
) -> YNode:
    line = _line(node)
    budget[0] -= 1
    if budget[0] < 0:
        return YScalar(line, None)
    if depth > _MAX_DEPTH:
        problems.append(Problem(file, line, "YAML: nested too deeply"))
        return YScalar(line, None)
    if isinstance(node, yaml.MappingNode):
        items: dict[str, YNode] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = _line(key_node)
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                problems.append(Problem(file, key_line, "YAML: keys must be plain strings"))
                continue
            key = _scalar(loader, file, key_node, problems)
            if not isinstance(key, str):
                problems.append(Problem(file, key_line, f"YAML: key {key!r} is not a string"))
                continue
            if key in items:
                problems.append(
                    Problem(
                        file, key_line, f"duplicate key {key!r} (first on line {key_lines[key]})"
                    )
                )
                continue
            items[key] = _convert(loader, file, value_node, problems, depth + 1, budget)
            key_lines[key] = key_line
        return YMap(line, items, key_lines)
    if isinstance(node, yaml.SequenceNode):
        return YSeq(
            line, tuple(_convert(loader, file, n, problems, depth + 1, budget) for n in node.value)
        )
    assert isinstance(node, yaml.ScalarNode)
    return YScalar(line, _scalar(loader, file, node, problems))


def _scalar(
    loader: yaml.SafeLoader, file: str, node: yaml.ScalarNode, problems: list[Problem]
) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problems.append(Problem(file, _line(node), f"YAML: {exc}"))
        return None


def to_plain(node: YNode) -> Any:
    """The plain Python value of a node (for inline JWKS, which is passed on as JSON)."""
    if isinstance(node, YMap):
        return {k: to_plain(v) for k, v in node.items.items()}
    if isinstance(node, YSeq):
        return [to_plain(v) for v in node.items]
    return node.value
