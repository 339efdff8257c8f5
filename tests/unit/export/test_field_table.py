"""The export's table covers every field and condition kind the policy language declares."""

from __future__ import annotations

from authz.export.field_table import CONDITION_EXPORTS, FIELD_EXPORTS, Refused
from authz.policy.conditions import CONDITION_KINDS
from authz.policy.fields import FROM_FIELDS, TO_FIELDS


def test_every_declared_field_is_exported_or_refused() -> None:
    assert set(FIELD_EXPORTS) == {*FROM_FIELDS, *TO_FIELDS}
    assert set(CONDITION_EXPORTS) == {k.name for k in CONDITION_KINDS}


def test_refusals_say_why() -> None:
    for entry in (*FIELD_EXPORTS.values(), *CONDITION_EXPORTS.values()):
        if isinstance(entry, Refused):
            assert len(entry.why) > 20, entry
        else:
            assert callable(entry)
