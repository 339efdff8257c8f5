"""The export's table covers every field and condition kind the policy language declares."""

from __future__ import annotations

from authz.export.field_table import CONDITION_EXPORTS, FIELD_EXPORTS, Refused
from authz.policy.language.conditions import CONDITION_KINDS
from authz.policy.language.fields import FROM_FIELDS, TO_FIELDS


def test_every_declared_field_is_exported_or_refused() -> None:
    assert set(FIELD_EXPORTS) == {*FROM_FIELDS, *TO_FIELDS}
    assert set(CONDITION_EXPORTS) == {k.name for k in CONDITION_KINDS}


def test_refusals_say_why() -> None:
    for entry in (*FIELD_EXPORTS.values(), *CONDITION_EXPORTS.values()):
        if isinstance(entry, Refused):
            assert len(entry.why) > 20, entry
        else:
            assert callable(entry)


def test_the_policy_language_never_imports_the_export() -> None:
    """The export reads the declarations; the declarations never name the export (not even
    lazily or under TYPE_CHECKING): no import circle between policy/ and export/."""
    import ast
    from pathlib import Path

    import authz.policy

    for path in Path(authz.policy.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.startswith("authz.export") for n in names), path
