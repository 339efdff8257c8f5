"""Findings an auditor would flag in a valid policy set (`authz lint`).

Each check is a small function over the compiled set's public objects (`PolicySet.files`, the
validated specs, `for_host`) and returns `Finding`s. Pure: the command reads the files and
hands their text in only so findings about hosts and JWT providers can name a line (the specs
keep lines for rules and roles, not for those).

Shadowing is judged conservatively: a deny is said to cover an allow only when that can be
seen from the patterns alone (no `from` or the same `from`, no `when` or a subset, and every
`to` entry of the allow inside one of the deny's). A finding is then certain, never a guess;
some real shadowing goes unreported.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from authz.authoring.lint_findings import ROLE_KEYS, TO_NOT_KEYS, Finding, Roles, expand
from authz.authoring.lint_identity import CODES as IDENTITY_CODES
from authz.authoring.lint_identity import introspection_findings
from authz.authoring.lint_limits import CODES as LIMIT_CODES
from authz.authoring.lint_limits import limit_findings
from authz.policy import PolicySet
from authz.policy.language.fields import FROM_FIELDS, TO_FIELDS, EntryField
from authz.policy.language.schema import FileSpec, FromSpec, RuleSpec, ToSpec
from authz.policy.language.spec import JwtProvider
from authz.policy.language.yaml_source import YamlProblems, YMap, YNode, YScalar, YSeq, parse_yaml
from authz.request.syntax import without_spiffe_prefix

CODES = {
    "open-allow": "an allow rule without `from` on broad paths: anyone, even unauthenticated",
    "any-principal": "`principals: ['*']` on broad paths: any workload of any trusted mesh",
    "shadowed-by-deny": "an allow rule that a deny rule always overrides",
    "unreachable": "a rule that can never match",
    "unused-role": "a role no rule uses",
    "dry-run-rule": "a dry_run rule left in place",
    "audit-rule": "an audit rule left in place",
    "unauthenticated-host": "a host with allow rules and no authentication configured",
    "jwt-no-audiences": "a JWT provider that accepts tokens minted for any audience",
    "jwks-plain-http": "keys fetched over plain http from a non-loopback host",
    "hostless-allow": "an allow rule in a file without `hosts`: it applies to every tenant's host",
    "host-overlap": "a file whose `hosts` cover another file's host: its allows apply there too",
    **LIMIT_CODES,
    **IDENTITY_CODES,
    "api-key-label-without-key": "an `api_key_label` condition on a rule that does not require "
    "an API key",
    "not-exportable": "with --exportable: Envoy's own filters cannot enforce this "
    "(authz export envoy)",
}


def lint(
    policy_set: PolicySet, sources: Mapping[str, str] | None = None, *, exportable: bool = False
) -> list[Finding]:
    """Every finding for `policy_set`, sorted by file and line. `sources` maps each file
    name to its text, for the lines of host and provider findings (line 1 without it).
    `exportable` adds what `authz export envoy` would refuse."""
    lines = _Lines(sources or {})
    roles: dict[str, tuple[ToSpec, ...]] = {
        r.name: r.entries for f in policy_set.files for r in f.roles
    }
    findings: list[Finding] = []
    for f in policy_set.files:
        for rule in f.rules:
            findings.extend(_rule_findings(rule, roles))
            findings.extend(_unreachable(rule, policy_set))
    findings.extend(_shadowed(policy_set.files, roles))
    findings.extend(_unused_roles(policy_set.files))
    findings.extend(_unauthenticated_hosts(policy_set, lines))
    findings.extend(_providers(policy_set.files, lines))
    findings.extend(_tenant_takeover(policy_set.files, lines))
    if exportable:
        findings.extend(_not_exportable(policy_set))
    findings.extend(limit_findings(policy_set.files, roles))
    findings.extend(introspection_findings(policy_set.files))
    return sorted(set(findings))


def _not_exportable(policy_set: PolicySet) -> Iterable[Finding]:
    """What `authz export envoy --svid-only` would refuse (it changes an allow or a deny), rule
    by rule. `--svid-only` (one URI SAN per certificate) is what Istio assumes of a mesh; the
    export itself says which rules need it (docs/export.md)."""
    from authz.export import export_envoy  # here: plain lint never imports the export

    for f in export_envoy(policy_set, svid_only=True).findings:
        if f.decides:
            yield Finding(f.file, f.line, "not-exportable", f.subject, f.why)


# --- rules one by one -----------------------------------------------------------------------


def _rule_findings(rule: RuleSpec, roles: Roles) -> Iterable[Finding]:
    def finding(code: str, message: str) -> Finding:
        return Finding(rule.file, rule.line, code, rule.name, message)

    if rule.dry_run:
        yield finding(
            "dry-run-rule",
            f"dry_run {rule.action} is logged, never enforced: enforce it or remove it",
        )
    if rule.action == "audit":
        yield finding("audit-rule", "audit rules only log; remove it once the audit is over")
    if any(c.kind == "api_key_label" for c in rule.when) and (
        rule.from_ is None or any(e.get("api_keys") is None for e in rule.from_)
    ):
        yield finding(
            "api-key-label-without-key",
            "an `api_key_label` condition, but not every `from` entry requires an API key "
            "(`api_keys`): a `not_` operator or `present: false` then also holds for requests "
            "without any key; add `from: [{api_keys: [...]}]`",
        )
    if rule.action != "allow" or not _broad(rule.to, roles):
        return
    where = "every path" if rule.to is None else "broad paths"
    claim_gate = any(c.kind == "claim" for c in rule.when)
    if rule.from_ is None and not claim_gate:
        yield finding(
            "open-allow", f"allows {where} with no `from`: anyone, even unauthenticated, may call"
        )
    for entry in rule.from_ or ():
        if "*" in (entry.get("principals") or ()):
            yield finding(
                "any-principal", f"`principals: ['*']` on {where}: any workload of any trusted mesh"
            )
            break


_BROAD_PATHS = frozenset({"*", "/*", "/{**}"})
# Fields a deny entry must have exactly as the allow entry to cover it (methods and paths are
# judged by inclusion in `_entry_covers`).
_SAME_TO_COVER = (*(k for k in ROLE_KEYS if k not in ("methods", "paths")), *TO_NOT_KEYS)


def _broad(to: tuple[ToSpec, ...] | None, roles: Roles) -> bool:
    """No `to`, or an entry that allows every path (no `paths`, or `*`, `/*`, `/{**}`)."""
    if to is None:
        return True
    for entry in expand(to, roles):
        paths = entry.get("paths")
        if paths is None or _BROAD_PATHS.intersection(paths):
            return True
    return False


def _unreachable(rule: RuleSpec, policy_set: PolicySet) -> Iterable[Finding]:
    issuers = {p.issuer for p in policy_set.jwt_providers + policy_set.introspection_providers}
    domains = {
        td for f in policy_set.files for td in (*(f.trust_domains or ()), *f.trust_domain_aliases)
    }
    has_keys = any(f.api_key_providers for f in policy_set.files)
    own_file = next((f for f in policy_set.files if f.file == rule.file), None)
    restricted = own_file is not None and own_file.trust_domains is not None

    def finding(message: str) -> Finding:
        return Finding(rule.file, rule.line, "unreachable", rule.name, message)

    if rule.from_ is not None:
        reasons = [_from_never(e, issuers, domains if restricted else None) for e in rule.from_]
        if all(r is not None for r in reasons):
            yield finding(f"never matches: {reasons[0]}")
            return
    if not issuers and any(c.kind == "claim" for c in rule.when):
        yield finding("never matches: it has a claim condition and the set has no JWT provider")
        return
    if not has_keys and (
        any(e.get("api_keys") is not None for e in rule.from_ or ())
        and all(e.get("api_keys") is not None for e in rule.from_ or ())
    ):
        yield finding("never matches: it needs an API key and the set has no api_keys provider")
        return
    if rule.to is not None:
        reasons = [_to_never(e) for e in rule.to]
        if all(r is not None for r in reasons):
            yield finding(f"never matches: {reasons[0]}")


def _from_never(entry: FromSpec, issuers: set[str], domains: set[str] | None) -> str | None:
    wanted = entry.get("issuers")
    if wanted is not None and not issuers.intersection(wanted):
        return f"no JWT provider has issuer {', '.join(wanted)}"
    if entry.get("request_principals") is not None and not issuers:
        return "it needs a JWT and the set has no JWT provider"
    principals = entry.get("principals")
    if principals is not None and domains is not None:
        reachable = [p for p in principals if _principal_domain(p) in (None, *domains)]
        if not reachable:
            return f"no principal is in the trusted domains ({', '.join(sorted(domains))})"
    return _excluded(entry, FROM_FIELDS)


def _excluded(entry: FromSpec | ToSpec, fields: Iterable[EntryField]) -> str | None:
    """A field whose values are all excluded again by its own `not_` form."""
    for field in (f.name for f in fields if f.negatable and not f.kind.flag):
        yes, no = entry.get(field), entry.get(f"not_{field}")
        if yes is not None and no is not None and set(yes) <= set(no):
            return f"`{field}` and `not_{field}` exclude each other"
    return None


def _to_never(entry: ToSpec) -> str | None:
    if "*" in (entry.get("not_methods") or ()):
        return "`not_methods: ['*']` excludes every method"
    return _excluded(entry, TO_FIELDS)


def _principal_domain(pattern: str) -> str | None:
    """The trust domain a principal pattern pins, or None when it can vary (`*`, `*suffix`)."""
    body = without_spiffe_prefix(pattern)
    if body.startswith("*") or "/" not in body:
        return None
    return body.split("/", 1)[0].lower()


# --- shadowing ------------------------------------------------------------------------------


def _shadowed(files: tuple[FileSpec, ...], roles: Roles) -> Iterable[Finding]:
    denies = [(f, r) for f in files for r in f.rules if r.action == "deny" and not r.dry_run]
    for f in files:
        for allow in f.rules:
            if allow.action != "allow":
                continue
            for deny_file, deny in denies:
                if _applies_wherever(deny_file, f) and _covers(deny, allow, roles):
                    yield Finding(
                        allow.file,
                        allow.line,
                        "shadowed-by-deny",
                        allow.name,
                        f"deny rule {deny.name!r} ({deny.file}:{deny.line}) matches every request "
                        "this rule allows: it never allows anything",
                    )
                    break


def _applies_wherever(deny_file: FileSpec, allow_file: FileSpec) -> bool:
    """True when every host `allow_file` applies to is also one `deny_file` applies to."""
    if deny_file.hosts is None or deny_file is allow_file:
        return True
    return allow_file.hosts is not None and set(allow_file.hosts) <= set(deny_file.hosts)


def _covers(deny: RuleSpec, allow: RuleSpec, roles: Roles) -> bool:
    if deny.from_ is not None:
        if allow.from_ is None:
            return False
        wanted = {_strip_line(e) for e in deny.from_}
        if not all(_strip_line(e) in wanted for e in allow.from_):
            return False
    if deny.when:
        have = {(c.kind, c.name, c.op, c.value, c.negated) for c in allow.when}
        if not all((c.kind, c.name, c.op, c.value, c.negated) in have for c in deny.when):
            return False
    if deny.to is None:
        return True
    if allow.to is None:
        return False
    deny_entries = expand(deny.to, roles)
    return all(any(_entry_covers(d, a) for d in deny_entries) for a in expand(allow.to, roles))


def _strip_line(entry: FromSpec) -> FromSpec:
    return replace(entry, line=0)


def _entry_covers(d: ToSpec, a: ToSpec) -> bool:
    """Every request `a` matches, `d` matches too (judged on patterns; conservative)."""
    for field in _SAME_TO_COVER:
        if d.get(field) is not None and d.get(field) != a.get(field):
            return False
    d_methods, a_methods = d.get("methods"), a.get("methods")
    any_method = d_methods is None or "*" in d_methods  # `methods: ["*"]` is any method
    if not any_method and (a_methods is None or not set(a_methods) <= set(d_methods)):
        return False
    d_paths, a_paths = d.get("paths"), a.get("paths")
    if d_paths is not None:
        if a_paths is None:
            return False
        return all(any(_path_covers(dp, ap) for dp in d_paths) for ap in a_paths)
    return True


def _path_covers(d: str, a: str) -> bool:
    """Every path matching pattern `a` matches pattern `d`."""
    if d == a or d == "*":
        return True
    if a == "*" or a.startswith("*"):
        return d.startswith("*") and a.endswith(d[1:]) and "{" not in a
    literal = a.split("{", 1)[0].rstrip("*")  # what every path matching `a` starts with
    if d.endswith("/{**}") and "{" not in d[:-5]:
        base = d[:-4]  # "/api/{**}" -> "/api/": matches "/api/" and everything below
        return literal.startswith(base)
    if d.endswith("*") and not d.startswith("*") and "{" not in d:
        return literal.startswith(d[:-1])
    return False


# --- roles, hosts, providers ----------------------------------------------------------------


def _unused_roles(files: tuple[FileSpec, ...]) -> Iterable[Finding]:
    used = {
        name
        for f in files
        for rule in f.rules
        for entry in rule.to or ()
        for name in (*(entry.get("role") or ()), *(entry.get("not_role") or ()))
    }
    for f in files:
        for role in f.roles:
            if role.name not in used:
                yield Finding(
                    role.file,
                    role.line,
                    "unused-role",
                    role.name,
                    "no rule uses this role; remove it or use it",
                )


def _unauthenticated_hosts(policy_set: PolicySet, lines: _Lines) -> Iterable[Finding]:
    for f in policy_set.files:
        for host in f.hosts or ():
            probe = "x" + host[1:] if host.startswith("*.") else host
            policy = policy_set.for_host(probe)
            if policy is None:
                continue
            auth = policy.authentication
            serves = any(r.action == "allow" and r.enforced for r in policy.rules)
            unauthenticated = not (auth.token_providers or auth.api_key_providers)
            if serves and auth.trust_domains is None and unauthenticated:
                yield Finding(
                    f.file,
                    lines.host(f.file, host),
                    "unauthenticated-host",
                    host,
                    "allow rules apply and no file for this host sets mtls.trust_domains, jwt or "
                    "api_keys: peers of any trust domain count as authenticated",
                )


def _allows(f: FileSpec) -> list[str]:
    return [r.name for r in f.rules if r.action == "allow" and not r.dry_run]


def _covers_host(pattern: str, host: str) -> bool:
    """Every name `host` (a pattern too) matches, `pattern` matches: equal, or `*.s` over a
    name or pattern below `s`."""
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    name = host[2:] if host.startswith("*.") else host
    return name.endswith("." + pattern[2:])


def _tenant_takeover(files: tuple[FileSpec, ...], lines: _Lines) -> Iterable[Finding]:
    """Files that add allows to hosts other files own (Authorino's host collisions)."""
    for f in files:
        allows = _allows(f)
        if not allows:
            continue
        if f.hosts is None:
            for rule in f.rules:
                if rule.action == "allow" and not rule.dry_run:
                    yield Finding(
                        f.file, rule.line, "hostless-allow", rule.name,
                        "the file lists no `hosts`, so this allow applies to every host, other "
                        "tenants' included; list the hosts it is for",
                    )  # fmt: skip
            continue
        for other in files:
            if other is f or other.hosts is None:
                continue
            for mine in f.hosts:
                for theirs in other.hosts:
                    if _covers_host(mine, theirs):
                        yield Finding(
                            f.file, lines.host(f.file, mine), "host-overlap", mine,
                            f"also covers {theirs} of {other.file}: this file's allow rules "
                            f"({', '.join(allows)}) apply to that host too",
                        )  # fmt: skip


def _providers(files: tuple[FileSpec, ...], lines: _Lines) -> Iterable[Finding]:
    for f in files:
        for p in f.jwt_providers:
            line = lines.provider(f.file, p.issuer)
            if not p.audiences:
                yield Finding(
                    f.file, line, "jwt-no-audiences", p.issuer,
                    "no `audiences`: a token this issuer minted for any other service is accepted",
                )  # fmt: skip
            if _plain_http(p):
                yield Finding(
                    f.file, line, "jwks-plain-http", p.issuer,
                    f"jwks_uri {p.jwks_uri} is plain http: anyone on the path can swap the keys",
                )  # fmt: skip


def _plain_http(provider: JwtProvider) -> bool:
    if provider.jwks_uri is None or not provider.jwks_uri.lower().startswith("http://"):
        return False
    host = (urlsplit(provider.jwks_uri).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class _Lines:
    """Lines of `hosts` entries and `jwt` providers, found by parsing the file's text again."""

    def __init__(self, sources: Mapping[str, str]):
        self._sources = sources
        self._roots: dict[str, YNode | None] = {}

    def _root(self, file: str) -> YMap | None:
        if file not in self._roots:
            text = self._sources.get(file)
            try:
                self._roots[file] = parse_yaml(file, text) if text is not None else None
            except YamlProblems:
                self._roots[file] = None
        root = self._roots[file]
        return root if isinstance(root, YMap) else None

    def host(self, file: str, host: str) -> int:
        root = self._root(file)
        node = root.items.get("hosts") if root is not None else None
        if isinstance(node, YSeq):
            for item in node.items:
                if (
                    isinstance(item, YScalar)
                    and isinstance(item.value, str)
                    and item.value.lower() == host
                ):
                    return item.line
            return node.line
        return 1

    def provider(self, file: str, issuer: str) -> int:
        root = self._root(file)
        auth = root.items.get("authentication") if root is not None else None
        jwt = auth.items.get("jwt") if isinstance(auth, YMap) else None
        if isinstance(jwt, YSeq):
            for item in jwt.items:
                if isinstance(item, YMap):
                    node = item.items.get("issuer")
                    if isinstance(node, YScalar) and node.value == issuer:
                        return item.line
        return 1
