"""What a field's export (authz/export/field_table.py) may use while one rule is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from authz.export.envoy_api import rbac
from authz.export.hosts import Auth
from authz.policy.language.spec import ToSpec


@dataclass(frozen=True, slots=True)
class ExportContext:
    """One rule's build.

    `every`: the rule is an allow rule, so a field must hold under every reading of the
    request (docs/policy.md, "One rule for ambiguous requests"); otherwise (deny, audit) under
    any reading. A `not_` form is the negation of the positive match under the other mode, so
    the walker hands it `dual()`.
    `view`: which reading of the path a deny rule's policy is built for ("plain": as sent;
    "cut": every `;param` cut), or "both" (an allow rule: its path condition must hold for
    both readings, docs/policy.md).
    `svid_only`: the operator says the mesh CA issues SVIDs alone (one URI SAN per
    certificate), so Envoy's any-SAN match is the one reading.
    """

    auth: Auth
    roles: Mapping[str, tuple[ToSpec, ...]]
    to_entry: Callable[[ExportContext, ToSpec], rbac.Permission]
    every: bool = False
    view: str = "both"
    svid_only: bool = False

    def dual(self) -> ExportContext:
        return dataclasses.replace(self, every=not self.every)
