"""Compiled rules: each spec field becomes one named predicate over a `RequestContext`.

A compiled rule can say not only whether it matches but which field failed (`mismatch`), so
`authz explain` and `authz lint` can show why a rule did not apply. The fast path (`matches`)
uses the same predicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz.model import Authentication, Identity, Request
from authz.policy import patterns as pat
from authz.policy.context import RequestContext
from authz.policy.schema import ConditionSpec, FromSpec, RuleSpec, ToSpec

Predicate = Callable[[RequestContext], bool]


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    """One `from` or `to` entry: every check must hold (AND). `checks` are (field, predicate)."""

    line: int
    checks: tuple[tuple[str, Predicate], ...]
    # The compiled entries of the roles this entry names, as (role, entry number, entry): the
    # `role` check is "one of these matches". Kept so coverage can tell which entry did.
    role_entries: tuple[tuple[str, int, CompiledEntry], ...] = ()

    def failed(self, ctx: RequestContext) -> str | None:
        """The first field that does not match, or None when the entry matches."""
        for field, check in self.checks:
            if not check(ctx):
                return field
        return None

    def matches(self, ctx: RequestContext) -> bool:
        return all(check(ctx) for _, check in self.checks)


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One `when` condition; `label` reads like the YAML (`claim scope contains 'cart'`)."""

    line: int
    label: str
    check: Predicate
    is_claim: bool


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
    # The rule can only match a request with a known API key (for the ApiKey challenge).
    needs_api_key: bool = False

    @property
    def enforced(self) -> bool:
        """True for allow and deny rules that are not dry_run: the ones that decide."""
        return self.action != "audit" and not self.dry_run

    def to_matches(self, ctx: RequestContext) -> bool:
        return self.to is None or any(e.matches(ctx) for e in self.to)

    def from_and_when_match(self, ctx: RequestContext) -> bool:
        if self.from_ is not None and not any(e.matches(ctx) for e in self.from_):
            return False
        return all(c.check(ctx) for c in self.when)

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
    index: int, spec: RuleSpec, roles: Mapping[str, tuple[ToSpec, ...]]
) -> CompiledRule:
    """Compile one validated rule; every role it names must be in `roles`."""
    from_ = tuple(compile_from(f) for f in spec.from_) if spec.from_ is not None else None
    to = tuple(compile_to(t, roles) for t in spec.to) if spec.to is not None else None
    when = tuple(compile_condition(c) for c in spec.when)
    needs_jwt = any(c.kind == "claim" for c in spec.when) or any(
        f.issuers is not None or f.request_principals is not None for f in spec.from_ or ()
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
    )


def _either(
    checks: list[tuple[str, Predicate]], field: str, values: Any, make: Callable[[Any], Predicate]
) -> None:
    """Add the check for `field` and for `not_field` (which holds when none of the values do)."""
    if values[0] is not None:
        checks.append((field, make(values[0])))
    if values[1] is not None:
        positive = make(values[1])
        checks.append((f"not_{field}", lambda ctx: not positive(ctx)))


def compile_from(spec: FromSpec) -> CompiledEntry:
    checks: list[tuple[str, Predicate]] = []

    def principals(values: Sequence[str]) -> Predicate:
        m = pat.principal_patterns(values)
        return lambda ctx: m.matches(ctx.principal)

    def namespaces(values: Sequence[str]) -> Predicate:
        m = pat.string_patterns(values)
        return lambda ctx: m.matches(ctx.namespace)

    def request_principals(values: Sequence[str]) -> Predicate:
        m = pat.string_patterns(values)
        return lambda ctx: m.matches(ctx.request_principal)

    def issuers(values: Sequence[str]) -> Predicate:
        s = frozenset(values)
        return lambda ctx: ctx.issuer is not None and ctx.issuer in s

    def ip_blocks(values: Sequence[str]) -> Predicate:
        m = pat.ip_blocks(pat.parse_ip_block(v) for v in values)
        return lambda ctx: m.matches(ctx.ip)

    _either(checks, "principals", (spec.principals, spec.not_principals), principals)
    _either(checks, "namespaces", (spec.namespaces, spec.not_namespaces), namespaces)
    _either(
        checks,
        "request_principals",
        (spec.request_principals, spec.not_request_principals),
        request_principals,
    )
    _either(checks, "issuers", (spec.issuers, spec.not_issuers), issuers)
    _either(checks, "ip_blocks", (spec.ip_blocks, spec.not_ip_blocks), ip_blocks)
    if spec.authenticated is True:
        checks.append(("authenticated", lambda ctx: ctx.authenticated))
    elif spec.authenticated is False:
        checks.append(("not_authenticated", lambda ctx: not ctx.authenticated))
    return CompiledEntry(spec.line, tuple(checks))


def compile_to(spec: ToSpec, roles: Mapping[str, tuple[ToSpec, ...]]) -> CompiledEntry:
    checks: list[tuple[str, Predicate]] = []

    def methods(values: Sequence[str]) -> Predicate:
        s = frozenset(values)
        return lambda ctx: ctx.method in s

    def paths(values: Sequence[str]) -> Predicate:
        m = pat.path_patterns(values)
        return lambda ctx: m.matches(ctx.path)

    def hosts(values: Sequence[str]) -> Predicate:
        m = pat.host_patterns(values)
        return lambda ctx: m.matches(ctx.host)

    def ports(values: Sequence[int]) -> Predicate:
        s = frozenset(values)
        return lambda ctx: ctx.port is not None and ctx.port in s

    role_entries = tuple(
        (n, i, compile_to(e, roles)) for n in spec.role or () for i, e in enumerate(roles[n])
    )

    def role(names: Sequence[str]) -> Predicate:
        if names is spec.role:
            entries = tuple(e for _, _, e in role_entries)
        else:
            entries = tuple(compile_to(e, roles) for n in names for e in roles[n])
        return lambda ctx: any(e.matches(ctx) for e in entries)

    _either(checks, "methods", (spec.methods, spec.not_methods), methods)
    _either(checks, "paths", (spec.paths, spec.not_paths), paths)
    _either(checks, "hosts", (spec.hosts, spec.not_hosts), hosts)
    _either(checks, "ports", (spec.ports, spec.not_ports), ports)
    _either(checks, "role", (spec.role, spec.not_role), role)
    return CompiledEntry(spec.line, tuple(checks), role_entries)


# --- when: claims and headers ---------------------------------------------------------------

_MISSING: Any = object()
MISSING: Any = _MISSING  # what `claim_value` returns for an absent claim
_LIST_STRING_CLAIMS = frozenset({"scope", "scp"})


def claim_value(claims: Mapping[str, Any] | None, name: str) -> Any:
    """The claim `name`; dotted names reach into nested objects (`realm_access.roles`).

    A top-level claim whose name contains dots (`https://example.com/roles`, as Auth0 writes
    namespaced claims) is found first under its full name. Returns `_MISSING` when absent.
    """
    if claims is None:
        return _MISSING
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _as_list(name: str, value: Any) -> list[Any] | None:
    """A list claim, or a space-separated `scope`/`scp` string (RFC 8693 section 4.2)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and name.rsplit(".", 1)[-1] in _LIST_STRING_CLAIMS:
        return value.split()
    return None


def _same(a: Any, b: Any) -> bool:
    """Claim equality without Python's coercions: `True == 1` and `"1" != 1` here."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return False


def _claim_predicate(spec: ConditionSpec) -> Callable[[Mapping[str, Any] | None], bool]:
    name, value = spec.name, spec.value
    if spec.op == "present":
        want = bool(value)
        return lambda claims: (claim_value(claims, name) is not _MISSING) == want
    if spec.op == "equals":
        return lambda claims: _same(claim_value(claims, name), value)
    if spec.op == "contains":

        def contains(claims: Mapping[str, Any] | None) -> bool:
            items = _as_list(name, claim_value(claims, name))
            return items is not None and any(_same(i, value) for i in items)

        return contains
    assert spec.op == "any_of"

    def any_of(claims: Mapping[str, Any] | None) -> bool:
        got = claim_value(claims, name)
        items = _as_list(name, got)
        candidates = items if items is not None else [got]
        return any(_same(c, v) for c in candidates for v in value)

    return any_of


def _header_predicate(spec: ConditionSpec) -> Callable[[Mapping[str, str]], bool]:
    name, value = spec.name, spec.value
    if spec.op == "present":
        want = bool(value)
        return lambda headers: (name in headers) == want
    if spec.op == "equals":
        return lambda headers: headers.get(name) == value
    if spec.op == "prefix":

        def prefix(headers: Mapping[str, str]) -> bool:
            got = headers.get(name)
            return got is not None and got.startswith(value)

        return prefix
    assert spec.op == "any_of"
    options = frozenset(value)
    return lambda headers: headers.get(name) in options


def compile_condition(spec: ConditionSpec) -> CompiledCondition:
    """`not_<op>` holds exactly when `<op>` does not (an absent claim or header included)."""
    op = f"not_{spec.op}" if spec.negated else spec.op
    label = f"{spec.kind} {spec.name} {op} {spec.value!r}"
    check: Predicate
    if spec.kind == "claim":
        claim = _claim_predicate(spec)
        check = lambda ctx: claim(ctx.claims)  # noqa: E731
    else:
        header = _header_predicate(spec)
        check = lambda ctx: header(ctx.headers)  # noqa: E731
    if spec.negated:
        positive = check
        check = lambda ctx: not positive(ctx)  # noqa: E731
    return CompiledCondition(spec.line, label, check, spec.kind == "claim")


# --- index keys -----------------------------------------------------------------------------


def _narrowing(
    entries: Iterable[ToSpec], roles: Mapping[str, tuple[ToSpec, ...]]
) -> set[tuple[str | None, str | None]]:
    keys: set[tuple[str | None, str | None]] = set()
    for e in entries:
        methods: set[str | None] | None = set(e.methods) if e.methods is not None else None
        segs: set[str | None] | None = None
        if e.paths is not None:
            first = {pat.path_first_segment(p) for p in e.paths}
            segs = None if None in first else first
        if e.role is not None and (methods is None or segs is None):
            # A role narrows what the entry's own fields leave open: the entry needs one of
            # the role's entries to match, so its keys are a superset of the entry's.
            role_keys = _narrowing([r for n in e.role for r in roles[n]], roles)
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
