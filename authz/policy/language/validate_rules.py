"""Validating `rules` and `roles`: each entry and condition walks its declarations.

`from`/`to` entries read their fields through `authz.policy.language.fields`, conditions through
`authz.policy.language.conditions`; nothing here names a field, so a new field needs no code here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from authz.policy.language import patterns as pat
from authz.policy.language import sections as sec
from authz.policy.language.check import Checker, kind_of
from authz.policy.language.conditions import CONDITION_KINDS, ConditionKind, Operator
from authz.policy.language.fields import FROM_FIELDS, ROLE_FIELDS, TO_FIELDS, EntryField
from authz.policy.language.kinds import CAPTURE_NAME, NAME
from authz.policy.language.spec import (
    ConditionSpec,
    EntrySpec,
    FromSpec,
    RoleSpec,
    RuleSpec,
    ToSpec,
)
from authz.policy.language.yaml_source import YMap, YNode, YScalar

T = TypeVar("T")


class RuleChecker(Checker):
    def name(self, node: YNode, what: str) -> str | None:
        name = self.string(node, what)
        if name is None:
            return None
        if not NAME.fullmatch(name):
            self.err(
                node.line, f"{what} {name!r}: use letters, digits, '-', '_' and '.' (at most 128)"
            )
            return None
        if name in sec.RESERVED_NAMES:
            self.err(node.line, f"{what} {name!r} is a reserved reason code; choose another name")
            return None
        return name

    def role(self, name: str, line: int, node: YNode) -> RoleSpec | None:
        if not NAME.fullmatch(name):
            self.err(line, f"role name {name!r}: use letters, digits, '-', '_' and '.'")
            return None
        items = self.seq(node, f"role {name!r}")
        if items is None:
            return None
        entries = [
            self.to_entry(item, f"an entry of role {name!r}", in_role=True) for item in items
        ]
        if any(e is None for e in entries):
            return None
        return RoleSpec(name, self.file, line, tuple(e for e in entries if e is not None))

    def rule(self, node: YNode) -> RuleSpec | None:
        m = self.section(node, sec.RULE)
        if m is None:
            return None
        before = len(self.problems)
        name = self.required(
            m, "name", "a rule needs a name", lambda n, _: self.name(n, "rule name")
        )
        action = self.action(m)
        dry_run = self.dry_run(m, action)
        from_ = self.listed(m, "from", self.from_entry)
        to = self.listed(m, "to", lambda n: self.to_entry(n, "a `to` entry", in_role=False))
        when = self.listed(m, "when", self.condition) or ()
        self.captures_bound(when, to)
        if name is None:
            return None
        if len(self.problems) > before or action is None:
            # Only for the set's checks in the same round (the file is never compiled): its
            # name, and the roles its valid `to` entries name.
            return RuleSpec(name, self.file, m.line, action or "deny", dry_run, None, to)
        return RuleSpec(name, self.file, m.line, action, dry_run, from_, to, when)

    def action(self, m: YMap) -> str | None:
        return self.required(
            m, "action", "a rule needs an action (allow, deny or audit)", self.known_action
        )

    def known_action(self, node: YNode, key: str) -> str | None:
        action = self.string(node, key)
        if action is None or action in sec.ACTIONS:
            return action
        close = difflib.get_close_matches(action.lower(), sec.ACTIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.err(node.line, f"unknown action {action!r} (allow, deny or audit){hint}")
        return None

    def dry_run(self, m: YMap, action: str | None) -> bool:
        if "dry_run" not in m.items:
            return False
        dry_run = bool(self.boolean(m.items["dry_run"], "dry_run"))
        if dry_run and action == "audit":
            self.err(m.items["dry_run"].line, "dry_run has no meaning on an audit rule")
        return dry_run

    def listed(self, m: YMap, key: str, read: Callable[[YNode], T | None]) -> tuple[T, ...] | None:
        """The rule's list under `key`, each item read (None: absent or not a list)."""
        items = self.seq(m.items[key], key) if key in m.items else None
        if items is None:
            return None
        out = [read(i) for i in items]
        return tuple(x for x in out if x is not None)

    # --- from / to entries

    def from_entry(self, node: YNode) -> FromSpec | None:
        empty = "an empty `from` entry would match everyone; omit `from` instead"
        read = self.entry(node, "a `from` entry", FROM_FIELDS, empty)
        return None if read is None else EntrySpec.of(read[0], **read[1])

    def to_entry(self, node: YNode, what: str, in_role: bool) -> ToSpec | None:
        fields = ROLE_FIELDS if in_role else TO_FIELDS
        read = self.entry(node, what, fields, f"{what} is empty and would match every request")
        return None if read is None else EntrySpec.of(read[0], **read[1])

    def entry(
        self, node: YNode, what: str, fields: Iterable[EntryField], empty: str
    ) -> tuple[int, dict[str, Any]] | None:
        """The line and the checked values, by spec attribute, of one `from`/`to` entry."""
        m = self.mapping(node, what)
        if m is None:
            return None
        self.fields(m, [k for f in fields for k in f.keys], what)
        if not m.items:
            self.err(m.line, empty)
            return None
        values: dict[str, Any] = {}
        for f in fields:
            for key in (k for k in f.keys if k in m.items):
                value = f.kind.read(self, m.items[key], key)
                if not f.kind.flag:
                    values[key] = value
                elif value is not None:
                    self.flag(values, f, key, m.items[key].line)
        return m.line, values

    def flag(self, values: dict[str, Any], f: EntryField, key: str, line: int) -> None:
        """A flag is stored as True (`authenticated: true`) or False (`not_authenticated`)."""
        if f.name in values:
            self.err(line, f"{f.name} and not_{f.name} contradict each other")
        values[f.name] = key == f.name

    # --- when

    def condition(self, node: YNode) -> ConditionSpec | None:
        m = self.mapping(node, "a `when` condition")
        if m is None:
            return None
        kinds = [k for k in CONDITION_KINDS if k.name in m.items]
        if len(kinds) != 1:
            names = " or ".join(f"`{k.name}`" for k in CONDITION_KINDS)
            self.err(m.line, f"a `when` condition names exactly one {names}")
            return None
        kind = kinds[0]
        self.fields(m, {kind.name, *kind.operator_keys}, f"a `{kind.name}` condition")
        subject = self.subject(m.items[kind.name], kind)
        given = [k for k in kind.operator_keys if k in m.items]
        if len(given) != 1:
            listed = ", ".join(op.name for op in kind.operators)
            self.err(
                m.line,
                f"a `{kind.name}` condition needs exactly one of {listed} (got {len(given)})",
            )
            return None
        op, negated = kind.operator(given[0])
        value = self.operand(m.items[given[0]], given[0], kind, op)
        if subject is None or value is None:
            return None
        return ConditionSpec(m.line, kind.name, subject, op.name, value, negated)

    def captures_bound(
        self, when: tuple[ConditionSpec, ...], to: tuple[ToSpec, ...] | None
    ) -> None:
        """A capture used in `when` must be bound by every path of every `to` entry: else the
        condition would compare against nothing on some matching request."""
        for cond in when:
            if cond.op != "equals_capture":
                continue
            paths = [p for e in to or () for p in e.get("paths") or ()]
            unbound = to is None or any(e.get("paths") is None for e in to)
            unbound = unbound or any(cond.value not in pat.path_captures(p) for p in paths)
            if unbound:
                self.err(
                    cond.line,
                    f"equals_capture: the capture {{{cond.value}}} is not bound by every path "
                    "of this rule's `to` (each entry needs `paths`, each path a "
                    f"`{{{cond.value}}}` segment)",
                )

    def subject(self, node: YNode, kind: ConditionKind) -> str | None:
        name = self.string(node, kind.name)
        if name is None or kind.check_subject is None:
            return name
        try:
            checked = kind.check_subject(name)
        except ValueError as exc:
            self.err(node.line, str(exc))
            return None
        return checked if isinstance(checked, str) else name

    def operand(self, node: YNode, key: str, kind: ConditionKind, op: Operator) -> Any:
        if op.shape == "flag":
            return self.boolean(node, key)
        if op.shape == "capture":
            name = self.string(node, key)
            if name is not None and not CAPTURE_NAME.fullmatch(name):
                self.err(node.line, f"{key}: {name!r} is not a capture name (as in `{{name}}`)")
                return None
            return name
        if op.shape == "list":
            items = self.seq(node, key)
            vals = [self.scalar(i, key, kind) for i in items or ()]
            return None if items is None or any(v is None for v in vals) else tuple(vals)
        value = self.scalar(node, key, kind)
        message = op.reject(value) if op.reject is not None and value is not None else None
        if message is not None:
            self.err(node.line, message)
            return None
        return value

    def scalar(self, node: YNode, what: str, kind: ConditionKind) -> Any:
        if not isinstance(node, YScalar) or not isinstance(node.value, kind.value_types):
            self.err(node.line, f"{what}: {kind.value_noun}, not {kind_of(node)}")
            return None
        return node.value
