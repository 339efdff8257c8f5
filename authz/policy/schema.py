"""The policy file format: one file's YAML -> typed, frozen spec (docs/policy.md, "Policy files").

Every problem becomes a `Problem` naming the file and the line of the offending node, and all
problems of a file are collected (an author fixes them in one round, not one per reload).
Checks that need the whole set (duplicate rule names, undefined roles) live in the compiler.
This module is pure: the loader hands it text.
"""

from __future__ import annotations

import difflib
import json
import os.path
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from authz.errors import Problem
from authz.model import ApiKeyProvider, JwtProvider, TokenLocation
from authz.policy import patterns as pat
from authz.policy.yaml_source import YamlProblems, YMap, YNode, YScalar, YSeq, parse_yaml, to_plain
from authz.reasons import CODES

ACTIONS = ("allow", "deny", "audit")

# Reason codes the service itself uses: a rule with one of these names would be
# indistinguishable from them in the decision log and metrics.
RESERVED_NAMES = CODES
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# RFC 7518 section 3.1 plus EdDSA (RFC 8037) and ES256K (RFC 8812). "none" is never accepted.
KNOWN_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
     "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)  # fmt: skip


# --- the spec -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FromSpec:
    """One `from` entry. A field is None when not given; lists are never empty.

    `authenticated` is True for `authenticated: true`, False for `not_authenticated: true`.
    """

    line: int
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] | None = None
    namespaces: tuple[str, ...] | None = None
    not_namespaces: tuple[str, ...] | None = None
    request_principals: tuple[str, ...] | None = None
    not_request_principals: tuple[str, ...] | None = None
    issuers: tuple[str, ...] | None = None
    not_issuers: tuple[str, ...] | None = None
    ip_blocks: tuple[str, ...] | None = None
    not_ip_blocks: tuple[str, ...] | None = None
    authenticated: bool | None = None


@dataclass(frozen=True, slots=True)
class ToSpec:
    """One `to` entry (or one entry of a role). Host patterns are lower-cased."""

    line: int
    methods: tuple[str, ...] | None = None
    not_methods: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    not_paths: tuple[str, ...] | None = None
    hosts: tuple[str, ...] | None = None
    not_hosts: tuple[str, ...] | None = None
    ports: tuple[int, ...] | None = None
    not_ports: tuple[int, ...] | None = None
    role: tuple[str, ...] | None = None
    not_role: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """One `when` condition: `kind` is "claim" or "header", `op` one of the operators.

    `negated` is set for the `not_` form of the operator (`not_equals`, ...). `value` is a
    scalar for equals/prefix, a tuple for any_of, a bool for present.
    """

    line: int
    kind: str
    name: str
    op: str
    value: Any
    negated: bool = False


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    file: str
    line: int
    action: str
    dry_run: bool = False
    from_: tuple[FromSpec, ...] | None = None
    to: tuple[ToSpec, ...] | None = None
    when: tuple[ConditionSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    file: str
    line: int
    entries: tuple[ToSpec, ...]


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One validated policy file. `hosts` is None for a file that applies to every host."""

    file: str
    hosts: tuple[str, ...] | None = None
    trust_domains: tuple[str, ...] | None = None
    jwt_providers: tuple[JwtProvider, ...] = ()
    roles: tuple[RoleSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    # Bound to their key files by the loader; `api_key_lines` are their lines, for problems.
    api_key_providers: tuple[ApiKeyProvider, ...] = ()
    api_key_lines: tuple[int, ...] = ()
    trust_domain_aliases: tuple[str, ...] = ()


# --- parsing --------------------------------------------------------------------------------


def parse_file(file: str, text: str, base_dir: str = ".") -> FileSpec | list[Problem]:
    """Validate one policy file; return its spec, or every problem found.

    `base_dir` is the file's directory, against which `jwks_file` paths are resolved.
    """
    try:
        root = parse_yaml(file, text)
    except YamlProblems as exc:
        return exc.problems
    v = _Validator(file, base_dir)
    if root is None:
        return [Problem(file, 1, "the file is empty")]
    spec = v.file_spec(root)
    return v.problems if v.problems or spec is None else spec


T = TypeVar("T")

_FROM_LISTS = ("principals", "namespaces", "request_principals", "issuers", "ip_blocks")
_FROM_FIELDS = frozenset(
    [*_FROM_LISTS, *(f"not_{f}" for f in _FROM_LISTS), "authenticated", "not_authenticated"]
)
_TO_LISTS = ("methods", "paths", "hosts", "ports", "role")
_TO_FIELDS = frozenset([*_TO_LISTS, *(f"not_{f}" for f in _TO_LISTS)])
_CLAIM_OPS = ("equals", "contains", "any_of", "present")
_HEADER_OPS = ("equals", "prefix", "any_of", "present")


class _Validator:
    def __init__(self, file: str, base_dir: str):
        self.file = file
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    # helpers

    def err(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def mapping(self, node: YNode, what: str) -> YMap | None:
        if not isinstance(node, YMap):
            self.err(node.line, f"{what} must be a mapping, not {_kind(node)}")
            return None
        return node

    def fields(self, node: YMap, allowed: frozenset[str], what: str) -> None:
        """Report every key of `node` that is not in `allowed`, with a suggestion."""
        for key, line in node.key_lines.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else f" (known: {', '.join(sorted(allowed))})"
                )
                self.err(line, f"unknown field {key!r} in {what}{hint}")

    def string(self, node: YNode, what: str) -> str | None:
        if not isinstance(node, YScalar) or not isinstance(node.value, str):
            self.err(node.line, f"{what} must be a string, not {_kind(node)}")
            return None
        if not node.value.strip():
            self.err(node.line, f"{what} must not be empty")
            return None
        return node.value

    def boolean(self, node: YNode, what: str) -> bool | None:
        if not isinstance(node, YScalar) or not isinstance(node.value, bool):
            self.err(node.line, f"{what} must be true or false, not {_kind(node)}")
            return None
        return node.value

    def seq(self, node: YNode, what: str) -> tuple[YNode, ...] | None:
        if not isinstance(node, YSeq):
            self.err(node.line, f"{what} must be a list, not {_kind(node)}")
            return None
        if not node.items:
            self.err(node.line, f"{what} must not be an empty list")
            return None
        return node.items

    def str_list(
        self, node: YNode, what: str, check: Callable[[str], Any] | None = None
    ) -> tuple[str, ...] | None:
        """A non-empty list of non-empty strings; `check` may raise ValueError or return a
        replacement value (e.g. the lower-cased form)."""
        items = self.seq(node, what)
        if items is None:
            return None
        out: list[str] = []
        ok = True
        for item in items:
            s = self.string(item, f"each entry of {what}")
            if s is None:
                ok = False
                continue
            if check is not None:
                try:
                    replaced = check(s)
                except ValueError as exc:
                    self.err(item.line, f"{what}: {exc}")
                    ok = False
                    continue
                if isinstance(replaced, str):
                    s = replaced
            out.append(s)
        return tuple(out) if ok else None

    # the document

    def file_spec(self, root: YNode) -> FileSpec | None:
        doc = self.mapping(root, "a policy file")
        if doc is None:
            return None
        self.fields(doc, frozenset({"hosts", "authentication", "roles", "rules"}), "a policy file")
        hosts = None
        if "hosts" in doc.items:
            hosts = self.str_list(doc.items["hosts"], "hosts", pat.check_host_pattern)
        trust_domains: tuple[str, ...] | None = None
        providers: tuple[JwtProvider, ...] = ()
        if "authentication" in doc.items:
            trust_domains, providers = self.authentication(doc.items["authentication"])
        roles: list[RoleSpec] = []
        if "roles" in doc.items:
            roles_node = self.mapping(doc.items["roles"], "roles")
            if roles_node is not None:
                for name, node in roles_node.items.items():
                    role = self.role(name, roles_node.key_lines[name], node)
                    if role is not None:
                        roles.append(role)
        rules: list[RuleSpec] = []
        if "rules" in doc.items:
            items = self.seq(doc.items["rules"], "rules")
            seen: dict[str, int] = {}
            for item in items or ():
                rule = self.rule(item)
                if rule is None:
                    continue
                if rule.name in seen:
                    self.err(
                        rule.line,
                        f"duplicate rule name {rule.name!r} (first on line {seen[rule.name]})",
                    )
                    continue
                seen[rule.name] = rule.line
                rules.append(rule)
        return FileSpec(self.file, hosts, trust_domains, providers, tuple(roles), tuple(rules))

    def name(self, node: YNode, what: str) -> str | None:
        name = self.string(node, what)
        if name is None:
            return None
        if not _NAME.fullmatch(name):
            self.err(
                node.line, f"{what} {name!r}: use letters, digits, '-', '_' and '.' (at most 128)"
            )
            return None
        if name in RESERVED_NAMES:
            self.err(node.line, f"{what} {name!r} is a reserved reason code; choose another name")
            return None
        return name

    def role(self, name: str, line: int, node: YNode) -> RoleSpec | None:
        if not _NAME.fullmatch(name):
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
        m = self.mapping(node, "a rule")
        if m is None:
            return None
        self.fields(m, frozenset({"name", "action", "dry_run", "from", "to", "when"}), "a rule")
        before = len(self.problems)
        name = self.name(m.items["name"], "rule name") if "name" in m.items else None
        if "name" not in m.items:
            self.err(m.line, "a rule needs a name")
        action = None
        if "action" not in m.items:
            self.err(m.line, "a rule needs an action (allow, deny or audit)")
        else:
            action = self.string(m.items["action"], "action")
            if action is not None and action not in ACTIONS:
                close = difflib.get_close_matches(action.lower(), ACTIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.err(
                    m.items["action"].line,
                    f"unknown action {action!r} (allow, deny or audit){hint}",
                )
                action = None
        dry_run = False
        if "dry_run" in m.items:
            dry_run = bool(self.boolean(m.items["dry_run"], "dry_run"))
            if dry_run and action == "audit":
                self.err(m.items["dry_run"].line, "dry_run has no meaning on an audit rule")
        from_ = None
        if "from" in m.items:
            items = self.seq(m.items["from"], "from")
            if items is not None:
                froms = [self.from_entry(i) for i in items]
                from_ = tuple(f for f in froms if f is not None)
        to = None
        if "to" in m.items:
            items = self.seq(m.items["to"], "to")
            if items is not None:
                tos = [self.to_entry(i, "a `to` entry", in_role=False) for i in items]
                to = tuple(t for t in tos if t is not None)
        when: list[ConditionSpec] = []
        if "when" in m.items:
            for item in self.seq(m.items["when"], "when") or ():
                cond = self.condition(item)
                if cond is not None:
                    when.append(cond)
        if len(self.problems) > before or name is None or action is None:
            return None
        return RuleSpec(name, self.file, m.line, action, dry_run, from_, to, tuple(when))

    def from_entry(self, node: YNode) -> FromSpec | None:
        m = self.mapping(node, "a `from` entry")
        if m is None:
            return None
        self.fields(m, _FROM_FIELDS, "a `from` entry")
        if not m.items:
            self.err(m.line, "an empty `from` entry would match everyone; omit `from` instead")
            return None
        values: dict[str, Any] = {}
        for field in _FROM_LISTS:
            for key in (field, f"not_{field}"):
                if key in m.items:
                    values[key] = self.str_list(m.items[key], key, _FROM_CHECKS[field])
        authenticated: bool | None = None
        for key, meaning in (("authenticated", True), ("not_authenticated", False)):
            if key in m.items:
                value = self.boolean(m.items[key], key)
                if value is False:
                    other = "not_authenticated" if meaning else "authenticated"
                    self.err(
                        m.items[key].line,
                        f"{key} can only be true; write `{other}: true` for the opposite",
                    )
                elif value is True:
                    if authenticated is not None:
                        self.err(
                            m.items[key].line,
                            "authenticated and not_authenticated contradict each other",
                        )
                    authenticated = meaning
        return FromSpec(line=m.line, authenticated=authenticated, **values)

    def to_entry(self, node: YNode, what: str, in_role: bool) -> ToSpec | None:
        m = self.mapping(node, what)
        if m is None:
            return None
        allowed = _TO_FIELDS - {"role", "not_role"} if in_role else _TO_FIELDS
        self.fields(m, allowed, what)
        if not m.items:
            self.err(m.line, f"{what} is empty and would match every request")
            return None
        values: dict[str, Any] = {}
        for key in ("methods", "not_methods"):
            if key in m.items:
                values[key] = self.str_list(m.items[key], key, pat.check_method)
        for key in ("paths", "not_paths"):
            if key in m.items:
                values[key] = self.str_list(m.items[key], key, pat.check_path_pattern)
        for key in ("hosts", "not_hosts"):
            if key in m.items:
                values[key] = self.str_list(m.items[key], key, pat.check_host_pattern)
        for key in ("ports", "not_ports"):
            if key in m.items:
                values[key] = self.ports(m.items[key], key)
        if not in_role:
            for key in ("role", "not_role"):
                if key in m.items:
                    node_ = m.items[key]
                    if isinstance(node_, YScalar):
                        one = self.string(node_, key)
                        values[key] = (one,) if one is not None else None
                    else:
                        values[key] = self.str_list(node_, key)
        values = {k: v for k, v in values.items() if k in m.items}
        return ToSpec(line=m.line, **values)

    def ports(self, node: YNode, what: str) -> tuple[int, ...] | None:
        items = self.seq(node, what)
        if items is None:
            return None
        out: list[int] = []
        for item in items:
            value = item.value if isinstance(item, YScalar) else None
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                self.err(item.line, f"{what}: a port is a number, not {_kind(item)}")
            elif not 1 <= value <= 65535:
                self.err(item.line, f"{what}: port {value} is out of range (1-65535)")
            else:
                out.append(value)
        return tuple(out) if len(out) == len(items) else None

    def condition(self, node: YNode) -> ConditionSpec | None:
        m = self.mapping(node, "a `when` condition")
        if m is None:
            return None
        kinds = [k for k in ("claim", "header") if k in m.items]
        if len(kinds) != 1:
            self.err(m.line, "a `when` condition names exactly one `claim` or `header`")
            return None
        kind = kinds[0]
        ops = _CLAIM_OPS if kind == "claim" else _HEADER_OPS
        all_ops = (*ops, *(f"not_{o}" for o in ops if o != "present"))
        self.fields(m, frozenset({kind, *all_ops}), f"a `{kind}` condition")
        name = self.string(m.items[kind], kind)
        if name is not None and kind == "header":
            try:
                name = pat.check_header_name(name)
            except ValueError as exc:
                self.err(m.items[kind].line, str(exc))
                name = None
        given = [o for o in all_ops if o in m.items]
        if len(given) != 1:
            listed = ", ".join(ops)
            self.err(
                m.line, f"a `{kind}` condition needs exactly one of {listed} (got {len(given)})"
            )
            return None
        key = given[0]
        negated = key.startswith("not_")
        op = key[4:] if negated else key
        vnode = m.items[key]
        value: Any
        if op == "present":
            value = self.boolean(vnode, key)
        elif op == "any_of":
            items = self.seq(vnode, key)
            vals = [self.scalar_value(i, key, kind) for i in items or ()]
            value = None if items is None or any(v is None for v in vals) else tuple(vals)
        else:
            value = self.scalar_value(vnode, key, kind)
            if op == "prefix" and value == "":
                self.err(vnode.line, "an empty prefix matches everything; use `present: true`")
                value = None
        if name is None or value is None:
            return None
        return ConditionSpec(m.line, kind, name, op, value, negated)

    def scalar_value(self, node: YNode, what: str, kind: str) -> Any:
        """Header values are strings; claim values may be strings, numbers or booleans."""
        if kind == "header":
            if not isinstance(node, YScalar) or not isinstance(node.value, str):
                self.err(node.line, f"{what}: a header value is a string, not {_kind(node)}")
                return None
            return node.value
        if not isinstance(node, YScalar) or not isinstance(node.value, (str, int, float, bool)):
            self.err(
                node.line,
                f"{what}: a claim value is a string, number or boolean, not {_kind(node)}",
            )
            return None
        return node.value

    # authentication

    def authentication(self, node: YNode) -> tuple[tuple[str, ...] | None, tuple[JwtProvider, ...]]:
        m = self.mapping(node, "authentication")
        if m is None:
            return None, ()
        self.fields(m, frozenset({"mtls", "jwt"}), "authentication")
        trust_domains = None
        if "mtls" in m.items:
            mtls = self.mapping(m.items["mtls"], "mtls")
            if mtls is not None:
                self.fields(mtls, frozenset({"trust_domains"}), "mtls")
                if "trust_domains" in mtls.items:
                    trust_domains = self.str_list(
                        mtls.items["trust_domains"], "trust_domains", _check_trust_domain
                    )
        providers: list[JwtProvider] = []
        if "jwt" in m.items:
            for item in self.seq(m.items["jwt"], "jwt") or ():
                p = self.provider(item)
                if p is not None:
                    providers.append(p)
        return trust_domains, tuple(providers)

    def provider(self, node: YNode) -> JwtProvider | None:
        m = self.mapping(node, "a jwt provider")
        if m is None:
            return None
        allowed = frozenset(
            {"issuer", "audiences", "jwks_uri", "jwks_file", "jwks", "discovery", "from",
             "forward", "claims_to_headers", "algorithms"}
        )  # fmt: skip
        self.fields(m, allowed, "a jwt provider")
        before = len(self.problems)
        issuer = self.string(m.items["issuer"], "issuer") if "issuer" in m.items else None
        if "issuer" not in m.items:
            self.err(m.line, "a jwt provider needs an issuer")
        audiences: tuple[str, ...] = ()
        if "audiences" in m.items:
            audiences = self.str_list(m.items["audiences"], "audiences") or ()
        sources: list[str] = [k for k in ("jwks_uri", "jwks_file", "jwks") if k in m.items]
        discovery = False
        if "discovery" in m.items:
            discovery = bool(self.boolean(m.items["discovery"], "discovery"))
            if discovery:
                sources.append("discovery")
        if len(sources) != 1:
            self.err(
                m.line,
                "a jwt provider needs exactly one key source: jwks_uri, jwks_file, jwks or "
                f"discovery: true (got {', '.join(sources) or 'none'})",
            )
        jwks_uri = jwks_file = jwks_json = None
        if "jwks_uri" in m.items:
            jwks_uri = self.string(m.items["jwks_uri"], "jwks_uri")
            if jwks_uri is not None and not re.match(r"https?://[^/\s]+", jwks_uri):
                self.err(m.items["jwks_uri"].line, f"jwks_uri {jwks_uri!r} is not an http(s) URL")
        if "jwks_file" in m.items:
            path = self.string(m.items["jwks_file"], "jwks_file")
            if path is not None:
                jwks_file = os.path.normpath(os.path.join(os.path.abspath(self.base_dir), path))
        if "jwks" in m.items:
            jwks_json = self.inline_jwks(m.items["jwks"])
        locations = self.locations(m.items["from"]) if "from" in m.items else None
        forward: bool | None = None  # omitted: the model's default
        if "forward" in m.items:
            forward = self.boolean(m.items["forward"], "forward") is True
        claims_to_headers: list[tuple[str, str]] = []
        if "claims_to_headers" in m.items:
            cth = self.mapping(m.items["claims_to_headers"], "claims_to_headers")
            for claim, hnode in cth.items.items() if cth is not None else ():
                header = self.string(hnode, f"the header for claim {claim!r}")
                if header is None:
                    continue
                try:
                    claims_to_headers.append((claim, pat.check_header_name(header)))
                except ValueError as exc:
                    self.err(hnode.line, f"claims_to_headers: {exc}")
        algorithms: tuple[str, ...] = ()
        if "algorithms" in m.items:
            algorithms = self.str_list(m.items["algorithms"], "algorithms", _check_algorithm) or ()
        if len(self.problems) > before or issuer is None:
            return None
        extra: dict[str, Any] = {} if locations is None else {"locations": locations}
        if forward is not None:
            extra["forward"] = forward
        return JwtProvider(
            issuer=issuer,
            audiences=audiences,
            jwks_uri=jwks_uri,
            jwks_file=jwks_file,
            jwks_json=jwks_json,
            discovery=discovery,
            claims_to_headers=tuple(claims_to_headers),
            algorithms=algorithms,
            **extra,
        )

    def inline_jwks(self, node: YNode) -> str | None:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            try:
                value = json.loads(node.value)
            except ValueError:
                self.err(node.line, "jwks: not valid JSON")
                return None
        elif isinstance(node, YMap):
            value = to_plain(node)
        else:
            self.err(node.line, f"jwks must be a JWKS mapping with `keys`, not {_kind(node)}")
            return None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("keys"), list)
            or not value["keys"]
        ):
            self.err(node.line, "jwks must be a JWKS: a mapping with a non-empty `keys` list")
            return None
        try:
            return json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            self.err(node.line, "jwks holds values that are not JSON")
            return None

    def locations(self, node: YNode) -> tuple[TokenLocation, ...] | None:
        items = self.seq(node, "from")
        if items is None:
            return None
        out: list[TokenLocation] = []
        for item in items:
            m = self.mapping(item, "a token location")
            if m is None:
                continue
            self.fields(m, frozenset({"header", "prefix", "query", "cookie"}), "a token location")
            kinds = [k for k in ("header", "query", "cookie") if k in m.items]
            if len(kinds) != 1:
                self.err(m.line, "a token location names exactly one of header, query or cookie")
                continue
            kind = kinds[0]
            value = self.string(m.items[kind], kind)
            if value is None:
                continue
            prefix = ""
            if "prefix" in m.items:
                if kind != "header":
                    self.err(m.items["prefix"].line, "prefix is only for a header location")
                    continue
                p = m.items["prefix"]
                if not isinstance(p, YScalar) or not isinstance(p.value, str):
                    self.err(p.line, "prefix must be a string")
                    continue
                prefix = p.value
            if kind == "header":
                try:
                    out.append(TokenLocation(header=pat.check_header_name(value), prefix=prefix))
                except ValueError as exc:
                    self.err(m.items[kind].line, str(exc))
            elif kind == "query":
                out.append(TokenLocation(query=value))
            else:
                out.append(TokenLocation(cookie=value))
        return tuple(out) if len(out) == len(items) else None


def _check_principal(p: str) -> None:
    pat.check_star_pattern(p)


def _check_trust_domain(td: str) -> str:
    if "/" in td or ":" in td or td != td.strip():
        raise ValueError(f"{td!r} is not a trust domain (a name like cluster.local)")
    return td.lower()


def _check_algorithm(alg: str) -> None:
    if alg.lower() == "none":
        raise ValueError("'none' is never accepted")
    if alg not in KNOWN_ALGORITHMS:
        close = difflib.get_close_matches(alg, sorted(KNOWN_ALGORITHMS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algorithm {alg!r}{hint}")


def _check_issuer(_: str) -> None:
    return None


_FROM_CHECKS: dict[str, Callable[[str], Any]] = {
    "principals": _check_principal,
    "namespaces": pat.check_star_pattern,
    "request_principals": pat.check_star_pattern,
    "issuers": _check_issuer,
    "ip_blocks": pat.parse_ip_block,
}


def _kind(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        return f"a number ({v})"
    if isinstance(v, str):
        return f"a string ({v!r})"
    return type(v).__name__
