"""Compiled rules: each spec field becomes one named predicate over a `RequestContext`.

A compiled rule can say not only whether it matches but which field failed (`mismatch`), so
`authz explain` and `authz lint` can show why a rule did not apply. The fast path (`matches`)
uses the same predicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter, methodcaller
from typing import Any

from authz.model import Identity, Request
from authz.policy.decide.context import RequestContext
from authz.policy.language import patterns as pat
from authz.policy.language.conditions import CONDITION_KINDS
from authz.policy.language.fields import FROM_FIELDS, TO_FIELDS, EntryField, RoleEntries, Test
from authz.policy.language.spec import (
    Authentication,
    ConditionSpec,
    EntrySpec,
    FromSpec,
    RuleSpec,
    ToSpec,
)

Getter = Callable[[RequestContext], Any]
Check = tuple[str, Getter, Test]
Captures = Callable[[RequestContext], "Mapping[str, str] | None"]
# How a test over one reading becomes a test over all of a request's readings: `any` for deny
# and audit rules and rate limits, `all` for allow rules (docs/policy.md, "One rule for
# ambiguous requests"). A `not_` form is negated per reading, before this.
Quantifier = Callable[[Iterable[bool]], bool]


def quantifier_for(action: str) -> Quantifier:
    """A deny (or audit) rule holds under any reading of the request, an allow rule only under
    every reading."""
    return all if action == "allow" else any


def _over_readings(test: Test, quantify: Quantifier) -> Test:
    return lambda readings: quantify(map(test, readings))


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    """One `from` or `to` entry: every check must hold (AND).

    `checks` are (field, get, test): the field holds when `test(get(ctx))`. `get` is an
    attrgetter, so a check costs the test's own call and no wrapping Python frame.
    """

    line: int
    checks: tuple[Check, ...]
    # The compiled entries of the roles this entry names, as (role, entry number, entry): the
    # `role` check is "one of these matches". Kept so coverage can tell which entry did.
    role_entries: tuple[tuple[str, int, CompiledEntry], ...] = ()

    def failed(self, ctx: RequestContext) -> str | None:
        """The first field that does not match, or None when the entry matches."""
        for field, get, test in self.checks:
            if not test(get(ctx)):
                return field
        return None

    def matches(self, ctx: RequestContext) -> bool:
        # Loops, not all()/any() over generators: these run for every candidate rule of every
        # check, and a generator costs more than the comparisons it drives.
        for _, get, test in self.checks:  # noqa: SIM110
            if not test(get(ctx)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One `when` condition; `label` reads like the YAML (`claim scope contains 'cart'`)."""

    line: int
    label: str
    get: Getter
    test: Test
    needs_jwt: bool
    needs_api_key: bool = False

    def check(self, ctx: RequestContext) -> bool:
        return self.test(self.get(ctx))


@dataclass(frozen=True, slots=True)
class Reads:
    """Request fields a rule reads besides method, path, host and the identity.

    `opaque` is set when a rule reads something this list does not name (a field declared
    later that nobody taught the decision cache): such a host's checks are never cached, so a
    new field can make the cache slower, never wrong.
    """

    headers: frozenset[str] = frozenset()
    port: bool = False
    source_ip: bool = False
    opaque: bool = False
    query: bool = False  # `when: query` reads the query string
    context: bool = False  # `when: context` reads the route's context_extensions

    def __or__(self, other: Reads) -> Reads:
        return Reads(
            self.headers | other.headers,
            self.port or other.port,
            self.source_ip or other.source_ip,
            self.opaque or other.opaque,
            self.query or other.query,
            self.context or other.context,
        )


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to evaluate. `index` is its place in the set (files by name, then order).

    `index_keys` are the (method, first path segment) pairs under which the rule is indexed;
    None in either place means "any".
    """

    index: int
    name: str
    file: str
    line: int
    action: str
    dry_run: bool
    from_: tuple[CompiledEntry, ...] | None
    to: tuple[CompiledEntry, ...] | None
    when: tuple[CompiledCondition, ...]
    needs_jwt: bool
    index_keys: frozenset[tuple[str | None, str | None]]
    spec: RuleSpec
    # What the rule reads of a request beyond method, path, host and identity (see `Reads`):
    # the decision cache keys on exactly these.
    reads: Reads
    # The rule can only match a request with a known API key (for the ApiKey challenge).
    needs_api_key: bool = False
    # The path captures of the first matching `to` entry; None for a rule that uses none.
    captures_of: Captures | None = None

    def captures(self, ctx: RequestContext) -> Mapping[str, str] | None:
        """What the rule's matching path captured (`{tenant}` -> `acme`), for explain."""
        return self.captures_of(ctx) if self.captures_of is not None else None

    @property
    def enforced(self) -> bool:
        """True for allow and deny rules that are not dry_run: the ones that decide."""
        return self.action != "audit" and not self.dry_run

    def to_matches(self, ctx: RequestContext) -> bool:
        if self.to is None:
            return True
        for entry in self.to:  # noqa: SIM110
            if entry.matches(ctx):
                return True
        return False

    def from_and_when_match(self, ctx: RequestContext) -> bool:
        if self.from_ is not None:
            for entry in self.from_:
                if entry.matches(ctx):
                    break
            else:
                return False
        for condition in self.when:  # noqa: SIM110
            if not condition.test(condition.get(ctx)):
                return False
        return True

    def matches(self, ctx: RequestContext) -> bool:
        return self.to_matches(ctx) and self.from_and_when_match(ctx)

    def mismatch(self, ctx: RequestContext) -> str | None:
        """None when the rule matches, else which part failed, e.g. `from: principals`."""
        for part, entries in (("to", self.to), ("from", self.from_)):
            if entries is None:
                continue
            failures = [e.failed(ctx) for e in entries]
            if any(f is None for f in failures):
                continue
            if len(failures) == 1:
                return f"{part}: {failures[0]}"
            listed = "; ".join(f"entry {i + 1}: {f}" for i, f in enumerate(failures))
            return f"{part}: no entry matches ({listed})"
        for cond in self.when:
            if not cond.check(ctx):
                return f"when: {cond.label}"
        return None

    def explain(
        self, request: Request, identity: Identity, authentication: Authentication | None = None
    ) -> str | None:
        """`mismatch` for a plain request and identity (for tools; not the request path)."""
        return self.mismatch(RequestContext(request, identity, authentication or Authentication()))


# --- building -------------------------------------------------------------------------------


def compile_rule(
    index: int,
    spec: RuleSpec,
    roles: Mapping[str, tuple[ToSpec, ...]],
    quantify: Quantifier | None = None,
) -> CompiledRule:
    """Compile one validated rule; every role it names must be in `roles`. `quantify`: how a
    field with several readings holds (default: `quantifier_for(spec.action)`)."""
    q = quantify or quantifier_for(spec.action)
    from_ = tuple(compile_from(f) for f in spec.from_) if spec.from_ is not None else None
    to = tuple(compile_to(t, roles, q) for t in spec.to) if spec.to is not None else None
    # Only a rule that compares with a capture computes captures: no cost for the others.
    captures = None
    if to is not None and spec.to is not None and any(c.op == "equals_capture" for c in spec.when):
        captures = _captures(to, spec.to)
    when = tuple(compile_condition(c, captures, q) for c in spec.when)
    needs_jwt = any(c.needs_jwt for c in when) or any(
        e.get(f.name) is not None for e in spec.from_ or () for f in FROM_FIELDS if f.needs_jwt
    )
    needs_api_key = any(c.needs_api_key for c in when) or any(
        e.get(f.name) is not None for e in spec.from_ or () for f in FROM_FIELDS if f.needs_api_key
    )
    return CompiledRule(
        index=index,
        name=spec.name,
        file=spec.file,
        line=spec.line,
        action=spec.action,
        dry_run=spec.dry_run,
        from_=from_,
        to=to,
        when=when,
        needs_jwt=needs_jwt,
        index_keys=_index_keys(spec.to, roles),
        spec=spec,
        reads=rule_reads(spec, roles),
        needs_api_key=needs_api_key,
        captures_of=captures,
    )


def _captures(to: tuple[CompiledEntry, ...], specs: tuple[ToSpec, ...]) -> Captures:
    """The captures of the first `to` entry that matches, by its first matching path."""
    entries = tuple(
        (entry, pat.PathCaptures(spec.get("paths") or ()))
        for entry, spec in zip(to, specs, strict=True)
    )

    def captures(ctx: RequestContext) -> Mapping[str, str] | None:
        for entry, paths in entries:
            if entry.matches(ctx):
                return paths.capture(ctx.path)
        return None

    return captures


# `RequestContext` attributes the decision cache key already covers: method, path and host are
# in every key, the identity attributes follow from the peer, the token and the API key (all
# in the key: `key_plan` adds every API-key location of the host).
_KEYED = frozenset(
    {"method", "path", "host", "principal", "namespace", "request_principal", "issuer"}
    | {"authenticated", "claims", "api_key_principal", "api_key_labels"}
)


def _attribute_reads(attribute: str, subject: str | None = None) -> Reads:
    if attribute in _KEYED:
        return Reads()
    if attribute == "port":
        return Reads(port=True)
    if attribute == "ip":
        return Reads(source_ip=True)
    if attribute == "headers" and subject is not None:
        return Reads(headers=frozenset({subject.lower()}))
    if attribute == "query":
        return Reads(query=True)
    if attribute == "context":
        return Reads(context=True)
    return Reads(opaque=True)


def rule_reads(spec: RuleSpec, roles: Mapping[str, tuple[ToSpec, ...]]) -> Reads:
    """The `Reads` of one rule, from the declarations of the fields it uses: its `from` and
    `to` entries (and the entries of the roles it names, however deep) and its conditions."""
    reads = Reads()
    for condition in spec.when:
        kind = next(k for k in CONDITION_KINDS if k.name == condition.kind)
        reads = reads | _attribute_reads(kind.attribute, condition.name)
    pending: list[tuple[EntrySpec, tuple[EntryField, ...]]] = [
        *((e, FROM_FIELDS) for e in spec.from_ or ()),
        *((e, TO_FIELDS) for e in spec.to or ()),
    ]
    seen: set[str] = set()
    while pending:
        entry, fields = pending.pop()
        for f in fields:
            if entry.get(f.name) is None and entry.get(f"not_{f.name}") is None:
                continue
            if f.name == "role":
                for name in (*(entry.get("role") or ()), *(entry.get("not_role") or ())):
                    if name not in seen:
                        seen.add(name)
                        pending.extend((e, TO_FIELDS) for e in roles.get(name, ()))
                continue
            reads = reads | _attribute_reads(f.reads)
    return reads


def _entry_checks(
    spec: EntrySpec,
    fields: Iterable[EntryField],
    roles: RoleEntries,
    role_entries: tuple[tuple[str, int, CompiledEntry], ...] = (),
    quantify: Quantifier = any,
) -> CompiledEntry:
    """One entry's checks in declaration order; `not_<field>` holds when none of its values do.
    A field with several readings holds as `quantify` says, each reading tested (and negated
    for `not_`) on its own."""
    checks: list[Check] = []
    for f in fields:
        get: Getter = attrgetter(f.reads) if f.reads else _whole
        if f.readings:
            get = attrgetter(f.readings)
            checks.extend(
                (name, get, _over_readings(test, quantify))
                for name, _, test in _entry_checks(spec, (_one_reading(f),), roles).checks
            )
            continue
        value = spec.get(f.name)
        if f.kind.flag:
            if value is not None:
                test = f.compile(True, roles)
                checks.append(
                    (f.name, get, test) if value else (f"not_{f.name}", get, _negate(test))
                )
            continue
        if value is not None:
            checks.append((f.name, get, f.compile(value, roles)))
        negated = spec.get(f"not_{f.name}") if f.negatable else None
        if negated is not None:
            checks.append((f"not_{f.name}", get, _negate(f.compile(negated, roles))))
    return CompiledEntry(spec.line, tuple(checks), role_entries)


def _whole(ctx: RequestContext) -> RequestContext:
    return ctx


def _one_reading(field: EntryField) -> EntryField:
    """`field` as a test of one reading (its checks, without the quantifier)."""
    return replace(field, readings="")


def _negate(positive: Test) -> Test:
    return lambda value: not positive(value)


def _no_roles(names: Sequence[str]) -> Test:
    raise AssertionError("a `from` entry has no `role`")


def compile_from(spec: FromSpec) -> CompiledEntry:
    return _entry_checks(spec, FROM_FIELDS, _no_roles)


def compile_to(
    spec: ToSpec, roles: Mapping[str, tuple[ToSpec, ...]], quantify: Quantifier = any
) -> CompiledEntry:
    named = spec.get("role") or ()
    own = tuple(
        (n, i, compile_to(e, roles, quantify)) for n in named for i, e in enumerate(roles[n])
    )

    def role_entries(names: Sequence[str]) -> Test:
        if names is named:  # the entry's own `role`: reuse the entries compiled for coverage
            entries = tuple(e for _, _, e in own)
        else:
            entries = tuple(compile_to(e, roles, quantify) for n in names for e in roles[n])
        return lambda ctx: any(e.matches(ctx) for e in entries)

    return _entry_checks(spec, TO_FIELDS, role_entries, own, quantify)


def compile_condition(
    spec: ConditionSpec, captures: Captures | None = None, quantify: Quantifier = any
) -> CompiledCondition:
    """`not_<op>` holds exactly when `<op>` does not (an absent claim or header included).

    An `equals_capture` test gets (what the kind reads, the captured segment or None) from
    `captures`, the rule's (validation made sure every path of the rule binds the name).
    A kind with readings (headers, query parameters) tests each reading, negated on its own,
    and holds as `quantify` says over them."""
    kind = next(k for k in CONDITION_KINDS if k.name == spec.kind)
    op, _ = kind.operator(spec.op)
    test: Test = op.build(spec.name, spec.value)
    if spec.negated:
        test = _negate(test)
    label = f"{spec.kind} {spec.name} {'not_' if spec.negated else ''}{spec.op} {spec.value!r}"
    get: Getter = attrgetter(kind.attribute)
    if kind.readings:
        get = methodcaller(kind.readings, spec.name)
        if op.shape == "capture":
            assert captures is not None, "equals_capture outside a rule with captures"
            get = _with_capture(get, captures, spec.value)
            test = _capture_over_readings(test, quantify)
        else:
            test = _over_readings(test, quantify)
    elif op.shape == "capture":
        assert captures is not None, "equals_capture outside a rule with captures"
        get = _with_capture(get, captures, spec.value)
    return CompiledCondition(
        spec.line, label, get, test, kind.needs_jwt, needs_api_key=kind.needs_api_key
    )


def _capture_over_readings(test: Test, quantify: Quantifier) -> Test:
    def over(pair: tuple[tuple[str | None, ...], str | None]) -> bool:
        readings, captured = pair
        return quantify(test((reading, captured)) for reading in readings)

    return over


def _with_capture(read: Getter, captures: Captures, name: str) -> Getter:
    def get(ctx: RequestContext) -> tuple[Any, str | None]:
        bound = captures(ctx)
        return read(ctx), bound.get(name) if bound is not None else None

    return get


# --- index keys -----------------------------------------------------------------------------


def _narrowing(
    entries: Iterable[ToSpec], roles: Mapping[str, tuple[ToSpec, ...]]
) -> set[tuple[str | None, str | None]]:
    keys: set[tuple[str | None, str | None]] = set()
    for e in entries:
        own_methods, paths, role = e.get("methods"), e.get("paths"), e.get("role")
        # `methods: ["*"]` is any method: indexed under "any", like no `methods` at all.
        any_method = own_methods is None or "*" in own_methods
        methods: set[str | None] | None = None if any_method else set(own_methods)
        segs: set[str | None] | None = None
        if paths is not None:
            first = {pat.path_first_segment(p) for p in paths}
            segs = None if None in first else first
        if role is not None and (methods is None or segs is None):
            # A role narrows what the entry's own fields leave open: the entry needs one of
            # the role's entries to match, so its keys are a superset of the entry's.
            role_keys = _narrowing([r for n in role for r in roles[n]], roles)
            if methods is None and all(m is not None for m, _ in role_keys):
                methods = {m for m, _ in role_keys}
            if segs is None and all(s is not None for _, s in role_keys):
                segs = {s for _, s in role_keys}
        for m in methods if methods is not None else {None}:
            for s in segs if segs is not None else {None}:
                keys.add((m, s))
    return keys


def _index_keys(
    to: tuple[ToSpec, ...] | None, roles: Mapping[str, tuple[ToSpec, ...]]
) -> frozenset[tuple[str | None, str | None]]:
    if to is None:
        return frozenset({(None, None)})
    return frozenset(_narrowing(to, roles))
