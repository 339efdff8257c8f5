"""One policy rule -> one RBAC policy: the walk over a rule's fields, as the compiler makes it
(authz/policy/decide/rules.py), through the export table (authz/export/field_table.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from authz.export.context import ExportContext
from authz.export.envoy_api import rbac
from authz.export.field_table import CONDITION_EXPORTS, FIELD_EXPORTS, Refused
from authz.export.hosts import Auth
from authz.export.matchers import (
    NotExportable,
    p_and,
    p_not,
    p_or,
    q_and,
    q_header,
    q_not,
    q_or,
)
from authz.export.rbac_fields import HAS_PARAM, host_matcher
from authz.policy.language.fields import FROM_FIELDS, TO_FIELDS, EntryField
from authz.policy.language.spec import ConditionSpec, EntrySpec, FromSpec, RuleSpec, ToSpec


def _entry(
    ctx: ExportContext,
    spec: EntrySpec,
    fields: Sequence[EntryField],
    negate: Callable[[Any], Any],
) -> list[Any]:
    """Each field of the entry through its export, as the compiler walks them: `not_<field>`
    is the negated positive match, built under the other reading mode (ExportContext)."""
    parts: list[Any] = []
    given_values = dict(spec.values)  # one dict, not a scan of the entry per field
    for f in fields:
        value = given_values.get(f.name)
        given: list[tuple[str, Any, bool]] = []
        if f.kind.flag:
            if value is not None:
                given.append((f.name if value else f"not_{f.name}", True, not value))
        else:
            if value is not None:
                given.append((f.name, value, False))
            other = given_values.get(f"not_{f.name}") if f.negatable else None
            if other is not None:
                given.append((f"not_{f.name}", other, True))
        for key, values, negated in given:
            build = FIELD_EXPORTS[f]
            if isinstance(build, Refused):
                raise NotExportable(f"`{key}`: {build.why}")
            parts.append(negate(build(ctx.dual(), values)) if negated else build(ctx, values))
    return parts


def from_entry(ctx: ExportContext, spec: FromSpec) -> rbac.Principal:
    return p_and(_entry(ctx, spec, FROM_FIELDS, p_not))


def to_entry(ctx: ExportContext, spec: ToSpec) -> rbac.Permission:
    return q_and(_entry(ctx, spec, TO_FIELDS, q_not))


def _condition(ctx: ExportContext, spec: ConditionSpec) -> rbac.Principal:
    build = CONDITION_EXPORTS[spec.kind]
    if isinstance(build, Refused):
        raise NotExportable(f"`{spec.kind}` conditions: {build.why}")
    if spec.negated:
        return p_not(build(ctx.dual(), spec.name, spec.op, spec.value))
    return build(ctx, spec.name, spec.op, spec.value)


@functools.lru_cache(maxsize=1024)
def q_hosts(values: tuple[str, ...]) -> rbac.Permission:
    """A file's `hosts` (shared by its rules: built once)."""
    return q_or([q_header(":authority", host_matcher(v)) for v in values])


def rule_policy(
    rule: RuleSpec,
    hosts: tuple[str, ...] | None,
    auth: Auth,
    roles: Mapping[str, tuple[ToSpec, ...]],
    stripped: bool = False,
    svid_only: bool = False,
) -> rbac.Policy:
    """The rule as one RBAC policy. A deny rule is exported twice (the caller asks for the
    `stripped` view too: it holds under either reading of the path); an allow rule's path
    conditions must hold under both readings at once (docs/policy.md, "One rule for ambiguous
    requests"; authz/export/rbac_fields.py `paths`)."""
    every = rule.action == "allow"
    # A deny rule's policy is built once per reading of the path; an allow rule's path
    # conditions read both at once.
    view = ("cut" if stripped else "plain") if not every else "both"
    ctx = ExportContext(auth, roles, to_entry, every=every, view=view, svid_only=svid_only)
    perm = [q_or([to_entry(ctx, e) for e in rule.to])] if rule.to is not None else []
    scope = [q_hosts(hosts)] if hosts is not None else []
    # Cheapest test first (RBAC's and_rules stop at the first miss): the `;params` view only
    # differs from the plain one when the path has a ';'; the rule's own `to` narrows more than
    # its file's hosts.
    guard = [HAS_PARAM] if stripped else []
    permission = q_and([*guard, *perm, *scope])
    who: list[rbac.Principal] = []
    if rule.from_ is not None:
        who.append(p_or([from_entry(ctx, f) for f in rule.from_]))
    who += [_condition(ctx, c) for c in rule.when]
    return rbac.Policy(permissions=[permission], principals=[p_and(who)])
