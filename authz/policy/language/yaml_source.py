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


# libyaml's parser when PyYAML was built with it (about 15 times faster than the pure-Python
# one, which made a 40,000-rule file take half a minute); the pure-Python one otherwise. Both
# are the *safe* loaders: they never construct arbitrary Python objects.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64  # policy files are shallow; deep nesting is a mistake
MAX_NODES = 1_000_000  # aliases are expanded: a "billion laughs" document must stop somewhere

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def parse_yaml(file: str, text: str) -> YNode | None:
    """Parse one YAML document into located nodes; None for an empty document.

    Raises `YamlProblems` for syntax errors, several documents, non-string or duplicate keys,
    nesting deeper than MAX_DEPTH and more than MAX_NODES nodes (aliases expanded).
    """
    loader = _Loader(text)
    try:
        return _Composer(loader, file).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlProblems([Problem(file, line, f"YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise YamlProblems([Problem(file, 1, f"YAML: {exc}")]) from exc
    finally:
        loader.dispose()


class _Frame:
    """A mapping or sequence being built. In a mapping, `key` holds a finished key node (with
    its tag) until its value arrives."""

    __slots__ = ("anchor", "height", "is_map", "items", "key", "key_lines", "line", "size")

    def __init__(self, is_map: bool, line: int, anchor: str | None) -> None:
        self.is_map = is_map
        self.line = line
        self.anchor = anchor
        self.items: Any = {} if is_map else []
        self.key_lines: dict[str, int] = {}
        self.key: tuple[YNode, str | None] | None = None
        self.size = 1  # nodes in this subtree, aliases expanded
        self.height = 1  # levels in this subtree, aliases expanded


class _Composer:
    """Builds located nodes from the parser's event stream with an explicit stack.

    PyYAML's own composer recurses once per nesting level, so a document of 100,000 `[` ends
    in a RecursionError (or, in the C composer, a crash) before any limit of ours is checked;
    here the nesting is checked as each collection opens, and nothing recurses.
    """

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        # Any: PyYAML's stubs leave the event API untyped, and libyaml's marks are their own type.
        self.loader: Any = loader
        self.file = file
        self.problems: list[Problem] = []
        # anchor -> (node, size, height) of a finished node, for aliases.
        self.anchors: dict[str, tuple[YNode, int, int]] = {}
        self.nodes = 0
        self.stack: list[_Frame] = []

    def document(self) -> YNode | None:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        root = self.node()
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise YamlProblems(
                [Problem(self.file, _line(event), "YAML: several documents in one file")]
            )
        if self.problems:
            raise YamlProblems(self.problems)
        return root

    def node(self) -> YNode:
        """Compose the node that starts at the next event, with everything inside it."""
        loader, stack = self.loader, self.stack
        while True:
            event = loader.get_event()
            line = _line(event)
            done: tuple[YNode, int, int] | None = None
            tag: str | None = None
            if isinstance(event, yaml.ScalarEvent):
                self.count(1, line)
                tag = self.tag(event)
                done = (YScalar(line, self.scalar(event, tag, line)), 1, 0)
                self.anchor(event.anchor, done)
            elif isinstance(event, yaml.AliasEvent):
                done = self.alias(event, line)
                self.count(done[1], line)  # an alias repeats its whole subtree
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise YamlProblems(
                        [Problem(self.file, line, f"YAML: nested more than {MAX_DEPTH} levels")]
                    )
                self.count(1, line)
                is_map = isinstance(event, yaml.MappingStartEvent)
                stack.append(_Frame(is_map, line, event.anchor))
            else:  # MappingEnd / SequenceEnd
                frame = stack.pop()
                node: YNode = (
                    YMap(frame.line, frame.items, frame.key_lines)
                    if frame.is_map
                    else YSeq(frame.line, tuple(frame.items))
                )
                done = (node, frame.size, frame.height)
                self.anchor(frame.anchor, done)
            if done is None:
                continue
            if not stack:
                return done[0]
            self.add(stack[-1], done, tag)

    def add(self, frame: _Frame, done: tuple[YNode, int, int], tag: str | None) -> None:
        node, size, height = done
        frame.size += size
        frame.height = max(frame.height, height + 1)
        if not frame.is_map:
            frame.items.append(node)
            return
        if frame.key is None:
            frame.key = (node, tag)
            return
        (key_node, key_tag), frame.key = frame.key, None
        key_line = key_node.line
        if not isinstance(key_node, YScalar) or key_tag == _MERGE:
            self.problems.append(Problem(self.file, key_line, "YAML: keys must be plain strings"))
            return
        key = key_node.value
        if not isinstance(key, str):
            self.problems.append(Problem(self.file, key_line, f"YAML: key {key!r} is not a string"))
            return
        if key in frame.items:
            first = frame.key_lines[key]
            self.problems.append(
                Problem(self.file, key_line, f"duplicate key {key!r} (first on line {first})")
            )
            return
        frame.items[key] = node
        frame.key_lines[key] = key_line

    def count(self, nodes: int, line: int) -> None:
        """Count nodes as a consumer walking the tree would visit them (aliases expanded)."""
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise YamlProblems(
                [Problem(self.file, line, f"YAML: more than {MAX_NODES} nodes (alias expansion?)")]
            )

    def anchor(self, name: str | None, done: tuple[YNode, int, int]) -> None:
        if name is not None:
            self.anchors[name] = done

    def alias(self, event: yaml.AliasEvent, line: int) -> tuple[YNode, int, int]:
        found = self.anchors.get(event.anchor or "")
        if found is None:
            # Also an alias to a collection still open: a recursive structure.
            raise YamlProblems(
                [Problem(self.file, line, f"YAML: undefined or recursive alias {event.anchor!r}")]
            )
        if len(self.stack) + found[2] > MAX_DEPTH:
            raise YamlProblems(
                [Problem(self.file, line, f"YAML: nested more than {MAX_DEPTH} levels")]
            )
        return found

    def tag(self, event: yaml.ScalarEvent) -> str:
        # As PyYAML's composer: a plain scalar's type follows from its form (int, bool, null,
        # ...), a quoted one is a string, an explicit tag is taken as written.
        if event.tag is not None and event.tag != "!":
            return str(event.tag)
        if not event.implicit[0]:
            return _STR
        return str(self.loader.resolve(yaml.ScalarNode, event.value, event.implicit))

    def scalar(self, event: Any, tag: str, line: int) -> Any:
        if tag == _STR:
            return event.value
        if tag == _MERGE:
            return None  # `<<` is only ever a key, and reported as one
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(Problem(self.file, line, f"YAML: {exc.problem or exc}"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.file, line, f"YAML: {exc}"))
            return None


def _line(item: Any) -> int:
    """The 1-based line where an event or node starts."""
    return int(item.start_mark.line) + 1


def to_plain(node: YNode) -> Any:
    """The plain Python value of a node (for inline JWKS, which is passed on as JSON)."""
    if isinstance(node, YMap):
        return {k: to_plain(v) for k, v in node.items.items()}
    if isinstance(node, YSeq):
        return [to_plain(v) for v in node.items]
    return node.value


def flatten(root: YNode | None) -> list[YNode]:
    """Every node of the tree, each parent after its children: the order `building.release`
    frees a big tree in, a step at a time. (An aliased node is listed once per use; the
    composer bounds the total.) No set of seen nodes: growing a set of a million entries is
    one long rehash."""
    if root is None:
        return []
    out: list[YNode] = []
    stack: list[YNode] = [root]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, YMap):
            stack.extend(node.items.values())
        elif isinstance(node, YSeq):
            stack.extend(node.items)
    out.reverse()
    return out
