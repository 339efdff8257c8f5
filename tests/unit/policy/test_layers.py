"""The layers of authz/policy/ (its docstring, "Layout"): `language` imports neither `decide`
nor `load`, `decide` does not import `load`, and no module of a layer imports the package's
public API back. Read from the source with `ast`, so `TYPE_CHECKING` and function-level imports
count. Nothing but `__init__.py` and the layers sits at the top, so a new module is placed."""

from __future__ import annotations

import ast
from pathlib import Path

import authz.policy

POLICY = Path(authz.policy.__file__).parent
LAYERS = ("language", "decide", "load")  # each may import only the ones before it


def imported(path: Path, layer: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = ["authz", "policy", layer][: 4 - node.level]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_each_layer_imports_only_the_layers_before_it() -> None:
    for i, layer in enumerate(LAYERS):
        above = tuple(f"authz.policy.{name}" for name in LAYERS[i + 1 :])
        for path in sorted((POLICY / layer).glob("*.py")):
            targets = imported(path, layer)
            assert "authz.policy" not in targets, (path.name, "imports the public API back")
            wrong = sorted(t for t in targets if t.startswith(above))
            assert not wrong, (f"{layer}/{path.name}", wrong)


def test_the_top_holds_only_the_api_and_the_layers() -> None:
    top = {p.name for p in POLICY.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", *LAYERS}
