"""How each declared policy field and condition kind becomes Envoy RBAC, or why it cannot.

The policy language declares its fields (authz/policy/language/fields.py) and condition kinds
(authz/policy/language/conditions.py) without knowing the export; this table, owned by the export,
says for each declaration how it is exported (authz/export/rbac_fields.py) or why it is refused.
tests/unit/export/test_field_table.py checks that every declaration has an entry, so a new
field is refused until someone writes its export, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.export import rbac_fields as rf
from authz.export.context import ExportContext
from authz.export.envoy_api import rbac
from authz.policy.language import conditions as cond
from authz.policy.language.fields import FROM_FIELDS, TO_FIELDS, EntryField

# A field's checked value -> its positive match (a Principal for `from`, a Permission for `to`).
FieldBuild = Callable[[ExportContext, Any], Any]
# (context, subject, operator, value) -> the condition's positive match.
ConditionBuild = Callable[[ExportContext, str, str, Any], rbac.Principal]


@dataclass(frozen=True, slots=True)
class Refused:
    """No RBAC equivalent: rules using it stay with the service (`--hybrid`) or are refused."""

    why: str


def _field(name: str) -> EntryField:
    return next(f for f in (*FROM_FIELDS, *TO_FIELDS) if f.name == name)


FIELD_EXPORTS: Mapping[EntryField, FieldBuild | Refused] = {
    _field("principals"): rf.principals,
    _field("namespaces"): rf.namespaces,
    _field("request_principals"): rf.request_principals,
    _field("issuers"): rf.issuers,
    _field("ip_blocks"): rf.ip_blocks,
    _field("api_keys"): Refused(
        "Envoy cannot check a presented API key nor tell API-key identities apart"
    ),
    _field("authenticated"): rf.authenticated,
    _field("methods"): rf.methods,
    _field("paths"): rf.paths,
    _field("hosts"): rf.hosts,
    _field("ports"): rf.ports,
    _field("role"): rf.role,
}

CONDITION_EXPORTS: Mapping[str, ConditionBuild | Refused] = {
    cond.CLAIM.name: rf.claim,
    cond.HEADER.name: rf.header,
    cond.QUERY.name: Refused("Envoy's RBAC cannot read a decoded query parameter"),
    cond.CONTEXT.name: Refused("ExtAuthzPerRoute context extensions exist only for ext_authz"),
    cond.API_KEY_LABEL.name: Refused("Envoy cannot check a presented API key"),
}
