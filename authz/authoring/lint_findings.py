"""What every lint module (`authz.authoring.lint`, `lint_limits`, `lint_identity`) shares: the
finding they report, and a rule's `to` entries with its roles expanded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from authz.policy.language.fields import ROLE_FIELDS, TO_FIELDS
from authz.policy.language.schema import ToSpec

Roles = Mapping[str, tuple[ToSpec, ...]]


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """`FILE:LINE: [subject] code: why`. `subject` is a rule, role, host or issuer."""

    file: str
    line: int
    code: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.subject}] {self.code}: {self.message}"


# A role entry keeps the `to` entry's own fields it leaves open, and every `not_` field.
ROLE_KEYS = tuple(f.name for f in ROLE_FIELDS)
TO_NOT_KEYS = tuple(f"not_{f.name}" for f in TO_FIELDS if f.negatable)


def expand(entries: Iterable[ToSpec], roles: Roles) -> list[ToSpec]:
    """`to` entries with `role` replaced by the role's entries (narrowed by the entry's own
    fields: an entry `{role: r, methods: [GET]}` keeps its methods on each role entry)."""
    out: list[ToSpec] = []
    for entry in entries:
        if entry.get("role") is None:
            out.append(entry)
            continue
        own = entry.replace(role=None)
        for name in entry.get("role"):
            for r in roles.get(name, ()):
                merged = r
                for field in ROLE_KEYS:
                    if own.get(field) is not None and r.get(field) is None:
                        merged = merged.replace(**{field: own.get(field)})
                for field in TO_NOT_KEYS:
                    if own.get(field) is not None:
                        merged = merged.replace(**{field: own.get(field)})
                out.append(merged)
    return out
