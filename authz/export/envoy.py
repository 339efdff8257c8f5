"""A policy set -> Envoy's own HTTP filters, built from typed Envoy API objects.

The filters, in order (docs/export.md explains each):

1. `envoy.filters.http.header_mutation`: removes client-sent copies of the headers jwt_authn
   sets from claims (the service removes them too, so a client never smuggles `x-user-id`);
2. `envoy.filters.http.jwt_authn`: the providers; a present token must verify (401 otherwise),
   a missing one is allowed; the verified payload and header go to dynamic metadata;
3. `envoy.filters.http.rbac`, action DENY: what the engine refuses before any rule (400s:
   invalid path, method, host; a verified token without `sub` or, for a JWKS of several keys,
   without `kid`) and the enforced deny rules, each twice: on the path as sent and on the path
   with `;params` cut (the engine's hardening); dry_run deny rules as shadow rules;
4. `envoy.filters.http.rbac`, action ALLOW: the enforced allow rules; dry_run allow rules as
   shadow rules. Nothing matches: 403;
5. `envoy.filters.http.rbac`, action LOG: the audit rules (Envoy marks the access log).

Every rule is guarded by its file's `hosts`. What Envoy cannot decide the way the engine does is
a `Finding` naming the rule (or the provider) and why; `decides=True` findings would change an
allow or a deny, the others only change the answer's details (status, headers).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.rbac import v3 as rbac
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.extensions.filters.http.ext_authz import v3 as xa
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as hm
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn import v3 as jwt
from envoy_data_plane.envoy.extensions.filters.http.rbac import v3 as hrbac
from envoy_data_plane.envoy.type import v3 as http_type
from envoy_data_plane.envoy.type.matcher import v3 as m
from envoy_data_plane.google.protobuf import Empty

from authz.envoy_bootstrap import AUTHZ_CLUSTER, EXPORTED_FILTERS, HYBRID_FILTERS
from authz.policy.compiler import PolicySet, merge_authentication
from authz.policy.conditions import _LIST_STRING_CLAIMS as _LIST_STRING_CLAIMS
from authz.policy.conditions import CONDITION_KINDS
from authz.policy.fields import FROM_FIELDS, TO_FIELDS, EntryField
from authz.policy.spec import (
    Authentication,
    ConditionSpec,
    EntrySpec,
    FileSpec,
    FromSpec,
    JwtProvider,
    RuleSpec,
    ToSpec,
)

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"  # jwt_authn's payload_in_metadata
HEADER_KEY = "header"  # jwt_authn's header_in_metadata
FILTER_NAMES = tuple(name for name, _ in EXPORTED_FILTERS)
_TRUSTED = re.escape("spiffe://")
# SPIFFE-ID.md (authz/identity/spiffe.py): a path segment is [A-Za-z0-9._-]+ but not . or ..
# Regexes stay small: Envoy refuses an RE2 program over 100 instructions by default.
_SEG = "[A-Za-z0-9._-]+"
_DOT_SEGMENT = r".*/\.\.?(?:/.*)?"  # a `.` or `..` segment: not a SPIFFE ID
_TD = "[a-z0-9._-]+"
# authz/identity/header_value.py: no control character, no leading or trailing blank.
_HEADER_VALUE = r"[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?"
# Python's str.split() whitespace, for space-separated scope/scp claims (RFC 8693 4.2).
_WS = "[" + "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "]"
# authz/policy/patterns.py normalize_host, after Envoy stripped the port and one trailing dot.
_LABEL = "[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_VALID_HOST = f"(?i)(?:{_LABEL}(?:\\.{_LABEL})*\\.?|\\[[0-9a-f:.]+\\])?(?::[0-9]+)?"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something Envoy's filters cannot do as the engine does. `decides`: it would change an
    allow or a deny (not exportable); otherwise only the details of the answer differ."""

    file: str
    line: int
    subject: str  # a rule name, "provider ISSUER" or "hosts PATTERN"
    why: str
    decides: bool = True
    kept: bool = False  # --hybrid: not exportable, so its hosts stay with the service

    def __str__(self) -> str:
        kind = "kept in ext_authz" if self.kept else "not exportable" if self.decides else "differs"
        return f"{self.file}:{self.line}: [{self.subject}] {kind}: {self.why}"


@dataclass(slots=True)
class EnvoyExport:
    """The filters (name and typed Envoy config, in order) and what they cannot express."""

    filters: list[tuple[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def exportable(self) -> bool:
        return not any(f.decides for f in self.findings)

    def filter_dicts(self) -> list[dict[str, Any]]:
        """`http_filters` entries (name + typed_config with @type), snake_case as in YAML."""
        urls = dict(EXPORTED_FILTERS + HYBRID_FILTERS)
        memo: dict[int, Any] = {}
        return [
            {"name": name, "typed_config": {"@type": urls[name], **to_json(message, memo)}}
            for name, message in self.filters
        ]


_Fields = tuple[tuple[str, str, Any], ...]
_FIELDS: dict[type, _Fields] = {}


def to_json(message: Any, memo: dict[int, Any] | None = None) -> dict[str, Any]:
    """A typed message as protobuf JSON with proto field names, defaults left out.

    betterproto2's own `to_dict` re-validates and re-reads type hints for every message (seconds
    for a 1,000-rule set); the objects were validated when built, so this only walks them. A
    sub-message shared by many rules (the workload check, a file's hosts) is walked once: `memo`
    maps it to its (shared, never mutated) JSON.
    """
    memo = {} if memo is None else memo
    hit = memo.get(id(message))
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    cls = type(message)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = tuple(
            (f.name, f.name.rstrip("_"), _default(f))
            for f in dataclasses.fields(cls)
            if not f.name.startswith("_")
        )
        _FIELDS[cls] = fields
    out: dict[str, Any] = {}
    for attr, name, default in fields:
        value = getattr(message, attr)
        if value is None or (default is not _NO_DEFAULT and value == default):
            continue
        out[name] = _json_value(value, memo)
    memo[id(message)] = out
    return out


_NO_DEFAULT: Any = object()


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def _json_value(value: Any, memo: dict[int, Any]) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_json_value(v, memo) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v, memo) for k, v in value.items()}
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return to_json(value, memo)


# --- small constructors -----------------------------------------------------------------------


class NotExportable(Exception):
    """Raised while building one rule: the engine's meaning has no RBAC equivalent."""


# The constructors below are cached: the same matcher (a method, a host, the workload check)
# recurs in many rules, and a typed object costs a validation to build. Never mutated.
@functools.lru_cache(maxsize=8192)
def s_exact(v: str, ignore_case: bool = False) -> m.StringMatcher:
    return m.StringMatcher(exact=v, ignore_case=ignore_case)


@functools.lru_cache(maxsize=8192)
def s_regex(r: str) -> m.StringMatcher:
    return m.StringMatcher(safe_regex=m.RegexMatcher(regex=r))


def p_any() -> rbac.Principal:
    return rbac.Principal(any=True)


def p_or(ids: Sequence[rbac.Principal]) -> rbac.Principal:
    return ids[0] if len(ids) == 1 else rbac.Principal(or_ids=rbac.PrincipalSet(ids=list(ids)))


def p_and(ids: Sequence[rbac.Principal]) -> rbac.Principal:
    if not ids:
        return p_any()
    return ids[0] if len(ids) == 1 else rbac.Principal(and_ids=rbac.PrincipalSet(ids=list(ids)))


def p_not(p: rbac.Principal) -> rbac.Principal:
    return rbac.Principal(not_id=p)


def p_san(matcher: m.StringMatcher) -> rbac.Principal:
    return rbac.Principal(authenticated=rbac.PrincipalAuthenticated(principal_name=matcher))


def p_meta(path: Sequence[str], value: m.ValueMatcher) -> rbac.Principal:
    """A value in jwt_authn's dynamic metadata (the verified token's payload or header)."""
    return rbac.Principal(
        sourced_metadata=rbac.SourcedMetadata(
            metadata_matcher=m.MetadataMatcher(
                filter=JWT_FILTER,
                path=[m.MetadataMatcherPathSegment(key=k) for k in path],
                value=value,
            ),
            metadata_source=rbac.MetadataSource.DYNAMIC,
        )
    )


def q_or(rules: Sequence[rbac.Permission]) -> rbac.Permission:
    if len(rules) == 1:
        return rules[0]
    return rbac.Permission(or_rules=rbac.PermissionSet(rules=list(rules)))


def q_and(rules: Sequence[rbac.Permission]) -> rbac.Permission:
    if not rules:
        return rbac.Permission(any=True)
    if len(rules) == 1:
        return rules[0]
    return rbac.Permission(and_rules=rbac.PermissionSet(rules=list(rules)))


def q_not(p: rbac.Permission) -> rbac.Permission:
    return rbac.Permission(not_rule=p)


def q_header(name: str, matcher: m.StringMatcher) -> rbac.Permission:
    return rbac.Permission(header=route.HeaderMatcher(name=name, string_match=matcher))


def q_path(matcher: m.StringMatcher) -> rbac.Permission:
    return rbac.Permission(url_path=m.PathMatcher(path=matcher))


# --- identity ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostClass:
    """One way a host picks its files: an exact name, a `*.suffix`, or none named (default).
    `matcher` is exclusive: a host is in exactly one class."""

    label: str
    files: tuple[str, ...]
    authentication: Authentication
    exact: str | None = None  # exact name, or the suffix ".example.com"
    is_suffix: bool = False
    excluded_exact: tuple[str, ...] = ()
    excluded_suffixes: tuple[str, ...] = ()

    def header_matchers(self) -> list[tuple[route.HeaderMatcher, bool]]:
        """(matcher on :authority, negated) that together (AND) select this class."""
        out: list[tuple[route.HeaderMatcher, bool]] = []
        if self.exact is not None:
            sm = (
                m.StringMatcher(suffix=self.exact, ignore_case=True)
                if self.is_suffix
                else s_exact(self.exact, ignore_case=True)
            )
            out.append((route.HeaderMatcher(name=":authority", string_match=sm), False))
        for h in self.excluded_exact:
            out.append(
                (route.HeaderMatcher(name=":authority", string_match=s_exact(h, True)), True)
            )
        for sfx in self.excluded_suffixes:
            sm = m.StringMatcher(suffix=sfx, ignore_case=True)
            out.append((route.HeaderMatcher(name=":authority", string_match=sm), True))
        return out

    def permission(self) -> rbac.Permission:
        return q_and(
            [
                q_not(rbac.Permission(header=h)) if neg else rbac.Permission(header=h)
                for h, neg in self.header_matchers()
            ]
        )

    def principal(self) -> rbac.Principal:
        return p_and(
            [
                p_not(rbac.Principal(header=h)) if neg else rbac.Principal(header=h)
                for h, neg in self.header_matchers()
            ]
        )


def host_classes(files: Sequence[FileSpec]) -> list[HostClass]:
    """Every class, most specific first: exact names, then suffixes longest first, then default."""
    exact = sorted({h for f in files for h in f.hosts or () if not h.startswith("*.")})
    suffixes = sorted(
        {h[1:] for f in files for h in f.hosts or () if h.startswith("*.")},
        key=lambda s: (-len(s), s),
    )
    classes: list[HostClass] = []

    def make(label: str, host: str, **kw: Any) -> HostClass:
        chosen = tuple(f for f in files if _applies(f, host))
        return HostClass(label, tuple(f.file for f in chosen), merge_authentication(chosen), **kw)

    for h in exact:
        classes.append(make(h, h, exact=h))
    for i, sfx in enumerate(suffixes):
        longer = tuple(x for x in suffixes[:i] if x.endswith(sfx))
        inside = tuple(h for h in exact if h.endswith(sfx) and len(h) > len(sfx))
        classes.append(
            make("*" + sfx, "x" + sfx, exact=sfx, is_suffix=True,
                 excluded_exact=inside, excluded_suffixes=longer)
        )  # fmt: skip
    classes.append(
        make("(any other host)", "", excluded_exact=tuple(exact), excluded_suffixes=tuple(suffixes))
    )
    return classes


@dataclass(frozen=True)
class _Auth:
    """The authentication in force, per host class (one class when it is the same everywhere)."""

    classes: tuple[HostClass, ...]
    issuers: tuple[str, ...]

    @functools.cached_property
    def workload(self) -> rbac.Principal:
        """A peer the engine counts as a workload (authz/identity/spiffe.py `workload_for`):
        a valid SPIFFE ID in one of the host's trust domains; without trust domains, also any
        non-SPIFFE principal that is a header value."""
        by_td: dict[frozenset[str] | None, list[HostClass]] = {}
        for c in self.classes:
            by_td.setdefault(c.authentication.trust_domains, []).append(c)
        if len(by_td) == 1:
            return _workload(next(iter(by_td)))
        return p_or(
            [
                p_and([p_or([c.principal() for c in cs]), _workload(tds)])
                for tds, cs in by_td.items()
            ]
        )

    @functools.cached_property
    def user(self) -> rbac.Principal:
        return p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(present_match=True))


def _workload(trust_domains: frozenset[str] | None) -> rbac.Principal:
    if trust_domains is not None:
        tds = "|".join(re.escape(t) for t in sorted(trust_domains))
        return p_and(
            [
                p_san(s_regex(f"{_TRUSTED}(?:{tds})(?:/{_SEG})*")),
                p_not(p_san(s_regex(_DOT_SEGMENT))),
            ]
        )
    valid = p_and(
        [p_san(s_regex(f"{_TRUSTED}{_TD}(?:/{_SEG})*")), p_not(p_san(s_regex(_DOT_SEGMENT)))]
    )
    other = p_and([p_san(s_regex(_HEADER_VALUE)), p_not(p_san(s_regex(f"(?i){_TRUSTED}.*")))])
    return p_or([valid, other])


@dataclass(frozen=True, slots=True)
class ExportContext:
    """What a field's export hook (authz/export/rbac_fields.py) may use."""

    auth: _Auth
    roles: Mapping[str, tuple[ToSpec, ...]]
    stripped: bool  # the deny rules' second view: the path with `;params` cut

    def from_entry(self, spec: FromSpec) -> rbac.Principal:
        return p_and(_entry(self, spec, FROM_FIELDS, p_not))

    def to_entry(self, spec: ToSpec) -> rbac.Permission:
        return q_and(_entry(self, spec, TO_FIELDS, q_not))


def _entry(
    ctx: ExportContext, spec: EntrySpec, fields: Sequence[EntryField], negate: Any
) -> list[Any]:
    """Each field of the entry through its declaration's export hook, as the compiler walks
    them (authz/policy/rules.py `_entry_checks`): `not_<field>` is the negated match."""
    parts: list[Any] = []
    for f in fields:
        value = spec.get(f.name)
        given: list[tuple[str, Any, bool]] = []
        if f.kind.flag:
            if value is not None:
                given.append((f.name if value else f"not_{f.name}", True, not value))
        else:
            if value is not None:
                given.append((f.name, value, False))
            other = spec.get(f"not_{f.name}") if f.negatable else None
            if other is not None:
                given.append((f"not_{f.name}", other, True))
        for key, values, negated in given:
            if f.export is None:
                raise NotExportable(f"`{key}` has no equivalent in Envoy's RBAC filter")
            one = f.export(ctx, values)
            parts.append(negate(one) if negated else one)
    return parts


def _condition(spec: ConditionSpec) -> rbac.Principal:
    kind = next(k for k in CONDITION_KINDS if k.name == spec.kind)
    if kind.export is None:
        raise NotExportable(f"`{spec.kind}` conditions have no equivalent in Envoy's RBAC filter")
    positive: rbac.Principal = kind.export(spec.name, spec.op, spec.value)
    return p_not(positive) if spec.negated else positive


@functools.lru_cache(maxsize=1024)
def q_hosts(values: tuple[str, ...]) -> rbac.Permission:
    """A file's `hosts` (shared by its rules: built once)."""
    from authz.export.rbac_fields import host_matcher

    return q_or([q_header(":authority", host_matcher(v)) for v in values])


# --- rules and filters --------------------------------------------------------------------------


def _rule_policy(
    rule: RuleSpec,
    hosts: tuple[str, ...] | None,
    auth: _Auth,
    roles: Mapping[str, tuple[ToSpec, ...]],
    stripped: bool = False,
) -> rbac.Policy:
    ctx = ExportContext(auth, roles, stripped)
    perm = [q_or([ctx.to_entry(e) for e in rule.to])] if rule.to is not None else []
    scope = [q_hosts(hosts)] if hosts is not None else []
    # Cheapest test first (RBAC's and_rules stop at the first miss): the `;params` view only
    # differs from the plain one when the path has a ';'; the rule's own `to` narrows more than
    # its file's hosts.
    guard = [q_header(":path", m.StringMatcher(contains=";"))] if stripped else []
    permission = q_and([*guard, *perm, *scope])
    who: list[rbac.Principal] = []
    if rule.from_ is not None:
        who.append(p_or([ctx.from_entry(f) for f in rule.from_]))
    who += [_condition(c) for c in rule.when]
    return rbac.Policy(permissions=[permission], principals=[p_and(who)])


def _refusals(auth: _Auth, providers: Sequence[JwtProvider]) -> dict[str, rbac.Policy]:
    """What the engine answers before any rule (400s, tokens it refuses): DENY policies."""
    any_principal = [p_any()]

    def on(header: str, regex: str) -> rbac.Policy:
        return rbac.Policy(permissions=[q_header(header, s_regex(regex))], principals=any_principal)

    policies = {
        # authz/paths.py: control characters and '\' anywhere; in the path part an invalid or
        # a control escape, and a dot segment with a ;param. (%2F/%5C: the HCM rejects them.)
        "invalid_path": rbac.Policy(
            permissions=[
                q_header(":path", s_regex(r"(?s).*[\x00-\x1f\x7f\x{80}-\x{9f}\\].*")),
                q_header(":path", s_regex(r"[^/].*")),
                # The regexes below run only for a path with a '%' or a ';' (a substring test).
                q_and(
                    [
                        q_header(":path", m.StringMatcher(contains="%")),
                        q_header(
                            ":path",
                            s_regex(
                                r"[^?#]*%(?:[0-9A-Fa-f]?(?:[^0-9A-Fa-f].*)?|[01][0-9A-Fa-f].*"
                                r"|7[Ff].*)"
                            ),
                        ),
                    ]
                ),
                q_and(
                    [
                        q_header(":path", m.StringMatcher(contains=";")),
                        q_header(":path", s_regex(r"[^?#]*/\.\.?;.*")),
                    ]
                ),
            ],
            principals=any_principal,
        ),
        "invalid_method": on(":method", ".*[a-z].*"),
        "invalid_host": rbac.Policy(
            permissions=[q_not(q_header(":authority", s_regex(_VALID_HOST)))],
            principals=any_principal,
        ),
    }
    if providers:
        # authz/identity/jwt.py: a verified token needs a sub that is a header value.
        policies["jwt_missing_claim"] = rbac.Policy(
            permissions=[rbac.Permission(any=True)],
            principals=[
                p_and(
                    [
                        p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(present_match=True)),
                        p_not(
                            p_meta(
                                [PAYLOAD_KEY, "sub"],
                                m.ValueMatcher(string_match=s_regex(_HEADER_VALUE)),
                            )
                        ),
                    ]
                )
            ],
        )
        several = [p for p in providers if _key_count(p) > 1]
        if several:
            # authz/identity/jwks.py KeySet.find: without kid, only a single key is chosen.
            policies["jwt_kid_required"] = rbac.Policy(
                permissions=[rbac.Permission(any=True)],
                principals=[
                    p_and(
                        [
                            p_or(
                                [
                                    p_meta(
                                        [PAYLOAD_KEY, "iss"],
                                        m.ValueMatcher(string_match=s_exact(p.issuer)),
                                    )
                                    for p in several
                                ]
                            ),
                            p_not(p_meta([HEADER_KEY, "kid"], m.ValueMatcher(present_match=True))),
                        ]
                    )
                ],
            )
    return policies


def _jwks_text(p: JwtProvider) -> str | None:
    if p.jwks_json is not None:
        return p.jwks_json
    if p.jwks_file is not None:
        with open(p.jwks_file, encoding="utf-8") as f:
            return f.read()
    return None


def _key_count(p: JwtProvider) -> int:
    text = _jwks_text(p)
    try:
        keys = json.loads(text).get("keys", []) if text else []
    except (ValueError, AttributeError):
        return 0
    return len(keys) if isinstance(keys, list) else 0


def _provider_findings(p: JwtProvider, file: str) -> list[Finding]:
    out: list[Finding] = []
    where = (file, 1, f"provider {p.issuer}")
    if p.discovery:
        out.append(Finding(*where, "discovery: Envoy's jwt_authn has no OpenID discovery"))
    if p.jwks_uri is not None:
        out.append(
            Finding(
                *where,
                "jwks_uri: Envoy cannot tell whether a remote JWKS has one key, so it cannot "
                "refuse a token without kid the way the service does; use jwks_file or jwks",
            )
        )
    if p.algorithms:
        out.append(Finding(*where, "algorithms: jwt_authn cannot restrict a provider's algorithms"))
    if p.claims_to_headers:
        out.append(
            Finding(
                *where,
                "claims_to_headers: jwt_authn sets only string, number and boolean claims",
                decides=False,
            )
        )
    return out


def _jwt_provider(p: JwtProvider) -> jwt.JwtProvider:
    headers = [
        jwt.JwtHeader(name=loc.header, value_prefix=loc.prefix)
        for loc in p.locations
        if loc.header is not None
    ]
    text = _jwks_text(p)
    return jwt.JwtProvider(
        issuer=p.issuer,
        audiences=list(p.audiences),
        local_jwks=core.DataSource(inline_string=text) if text is not None else None,
        forward=p.forward,
        from_headers=headers,
        from_params=[loc.query for loc in p.locations if loc.query is not None],
        from_cookies=[loc.cookie for loc in p.locations if loc.cookie is not None],
        payload_in_metadata=PAYLOAD_KEY,
        # Only read by the jwt_kid_required refusal, for a JWKS of several keys.
        header_in_metadata=HEADER_KEY if _key_count(p) > 1 else "",
        clock_skew_seconds=60,
        claim_to_headers=[
            jwt.JwtClaimToHeader(header_name=h, claim_name=c) for c, h in p.claims_to_headers
        ],
    )


def _applies(f: FileSpec, host: str) -> bool:
    if f.hosts is None:
        return True
    return any(
        host == h or (h.startswith("*.") and host.endswith(h[1:]) and len(host) > len(h) - 1)
        for h in f.hosts
    )


def export_envoy(policy: PolicySet, hybrid: bool = False) -> EnvoyExport:
    """The Envoy filters enforcing `policy`, and every finding.

    `hybrid`: hosts whose applying files are all exportable are decided by Envoy alone (their
    requests never reach ext_authz); every other host is decided by the service, through
    ext_authz, exactly as without the export (its rules, tokens and 400s); what cannot be
    exported is then reported as kept in ext_authz, not refused.
    """
    out = EnvoyExport()
    files = policy.files
    roles = {r.name: r.entries for f in files for r in f.roles}
    all_classes = host_classes(files)
    classes = all_classes
    if len({c.authentication for c in classes}) == 1 and not hybrid:
        classes = [HostClass("(every host)", (), classes[0].authentication)]
    providers = tuple(policy.jwt_providers)
    auth = _Auth(tuple(classes), tuple(p.issuer for p in providers))
    findings: list[Finding] = []
    for p in providers:
        first = next(f.file for f in files if p in f.jwt_providers)
        findings += _provider_findings(p, first)
    for f in files:
        lines = f.api_key_lines or (1,) * len(f.api_key_providers)
        for line, key in zip(lines, f.api_key_providers, strict=False):
            findings.append(
                Finding(
                    f.file,
                    line,
                    f"api_keys {key.name}",
                    "API keys: Envoy cannot check a presented key (the service answers 401 for "
                    "an unknown one) nor tell API-key identities apart",
                )
            )
        if f.trust_domain_aliases:
            findings.append(
                Finding(
                    f.file,
                    1,
                    "trust_domain_aliases",
                    "trust_domain_aliases: the export does not expand principal patterns over "
                    "the aliases yet",
                )
            )
    for c in classes:
        if len({p.locations for p in c.authentication.jwt_providers}) > 1:
            findings.append(
                Finding(
                    c.files[0],
                    1,
                    f"hosts {c.label}",
                    "its jwt providers look for tokens in different places (`from`)",
                )
            )
    removed = {h for p in providers for _, h in p.claims_to_headers}
    token_headers = {
        loc.header for p in providers if not p.forward for loc in p.locations if loc.header
    }
    deny = _refusals(auth, providers)
    deny_shadow: dict[str, rbac.Policy] = {}
    allow: dict[str, rbac.Policy] = {}
    allow_shadow: dict[str, rbac.Policy] = {}
    audit: dict[str, rbac.Policy] = {}
    for f in files:
        for rule in f.rules:
            where = (rule.file, rule.line, rule.name)
            try:
                for cond in rule.when:
                    if cond.kind == "header" and cond.name in removed | token_headers:
                        raise NotExportable(
                            f"header condition on {cond.name}: jwt_authn sets or removes it first"
                        )
                policy_ = _rule_policy(rule, f.hosts, auth, roles)
                second = (
                    _rule_policy(rule, f.hosts, auth, roles, stripped=True)
                    if rule.action == "deny"
                    else None
                )
            except NotExportable as exc:
                findings.append(Finding(*where, str(exc)))
                continue
            if rule.action == "audit":
                audit[rule.name] = policy_
                continue
            target = {
                ("deny", False): deny,
                ("deny", True): deny_shadow,
                ("allow", False): allow,
                ("allow", True): allow_shadow,
            }[(rule.action, rule.dry_run)]
            target[rule.name] = policy_
            if second is not None:
                target[rule.name + ";params"] = second
            if rule.action == "allow" and not rule.dry_run and _needs_jwt(rule):
                findings.append(
                    Finding(
                        *where,
                        "no token: Envoy answers 403 where the service answers 401 with a "
                        "Bearer challenge",
                        decides=False,
                    )
                )
    native = classes
    if hybrid:
        # A finding in a file (a rule or a provider it declares) sends its hosts to ext_authz.
        bad = {f.file for f in findings if f.decides}
        bad |= {
            g.file for g in files for p in g.jwt_providers for f in findings
            if f.decides and f.subject == f"provider {p.issuer}"
        }  # fmt: skip
        bad_labels = {f.subject.removeprefix("hosts ") for f in findings if f.decides}
        native = [c for c in classes if not bad.intersection(c.files) and c.label not in bad_labels]
        findings = [
            dataclasses.replace(f, decides=False, kept=True) if f.decides else f for f in findings
        ]
    out.findings = findings
    jwt_classes = [
        c if c in native else dataclasses.replace(c, authentication=Authentication())
        for c in classes
    ]
    filters: list[tuple[str, Any]] = [
        (
            FILTER_NAMES[0],
            hm.HeaderMutation(
                mutations=hm.Mutations(
                    request_mutations=[mutation.HeaderMutation(remove=h) for h in sorted(removed)]
                )
            ),
        ),
        (FILTER_NAMES[1], _jwt_authn(providers, jwt_classes)),
    ]
    if hybrid:
        # The same seven filters whatever the split (ECDS names them once in the bootstrap);
        # with every host native, authz.route marks nothing and ext_authz never runs.
        route: dict[str, rbac.Policy] = {}
        if len(native) < len(classes):
            mine = q_or([c.permission() for c in native]) if native else q_not(_ANY)
            for policies in (deny, deny_shadow, allow, allow_shadow, audit):
                for name, pol in policies.items():
                    policies[name] = rbac.Policy(
                        permissions=[q_and([mine, q_or(pol.permissions)])],
                        principals=pol.principals,
                    )
            theirs = rbac.Policy(permissions=[q_not(mine)], principals=[p_any()])
            allow["authz.ext_authz"] = route["authz.ext_authz"] = theirs
        filters += [
            (FILTER_NAMES[2], _rbac(rbac.RbacAction.DENY, deny, deny_shadow, "deny_")),
            (FILTER_NAMES[3], _rbac(rbac.RbacAction.ALLOW, allow, allow_shadow, "allow_")),
            (HYBRID_FILTERS[0][0], _rbac(rbac.RbacAction.LOG, route, None, "")),
            (HYBRID_FILTERS[1][0], _ext_authz()),
        ]
    else:
        filters += [
            (FILTER_NAMES[2], _rbac(rbac.RbacAction.DENY, deny, deny_shadow, "deny_")),
            (FILTER_NAMES[3], _rbac(rbac.RbacAction.ALLOW, allow, allow_shadow, "allow_")),
        ]
    filters.append((FILTER_NAMES[4], _rbac(rbac.RbacAction.LOG, audit, None, "audit_")))
    out.filters = filters
    return out


_ANY = rbac.Permission(any=True)


def _ext_authz() -> xa.ExtAuthz:
    """ext_authz to the service (cluster `authz`, as `authz envoy-config` declares it), enabled
    only where authz.route marked the request (RBAC LOG sets envoy.common access_log_hint)."""
    return xa.ExtAuthz(
        grpc_service=core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
            timeout=datetime.timedelta(milliseconds=500),
        ),
        transport_api_version=core.ApiVersion.V3,
        failure_mode_allow=False,
        status_on_error=http_type.HttpStatus(code=http_type.StatusCode.ServiceUnavailable),
        include_peer_certificate=True,
        filter_enabled_metadata=m.MetadataMatcher(
            filter="envoy.common",
            path=[m.MetadataMatcherPathSegment(key="access_log_hint")],
            value=m.ValueMatcher(bool_match=True),
        ),
    )


def _needs_jwt(rule: RuleSpec) -> bool:
    """As the compiler's `needs_jwt` (authz/policy/rules.py): claims, or a JWT-only field."""
    return any(k.needs_jwt for c in rule.when for k in CONDITION_KINDS if k.name == c.kind) or any(
        e.get(f.name) is not None for e in rule.from_ or () for f in FROM_FIELDS if f.needs_jwt
    )


def _jwt_authn(
    providers: Sequence[JwtProvider], classes: Sequence[HostClass]
) -> jwt.JwtAuthentication:
    """Each host class verifies the tokens of its own providers (first matching rule wins): a
    present token must verify, a missing one is allowed; a host without providers ignores it."""
    names = {p: f"p{i}" for i, p in enumerate(providers)}
    rules: list[jwt.RequirementRule] = []
    for c in classes:
        mine = c.authentication.jwt_providers
        # Negated matchers cannot be said in a RouteMatch; the classes are tried most specific
        # first, so the positive part selects the class.
        headers = [h for h, neg in c.header_matchers() if not neg]
        requires = (
            jwt.JwtRequirement(
                requires_any=jwt.JwtRequirementOrList(
                    requirements=[
                        *(jwt.JwtRequirement(provider_name=names[p]) for p in mine),
                        jwt.JwtRequirement(allow_missing=Empty()),
                    ]
                )
            )
            if mine
            else None
        )
        rules.append(
            jwt.RequirementRule(
                match=route.RouteMatch(prefix="/", headers=headers), requires=requires
            )
        )
    return jwt.JwtAuthentication(
        providers={n: _jwt_provider(p) for p, n in names.items()}, rules=rules
    )


def _rbac(
    action: rbac.RbacAction,
    policies: dict[str, rbac.Policy],
    shadow: dict[str, rbac.Policy] | None,
    prefix: str,
) -> hrbac.Rbac:
    return hrbac.Rbac(
        rules=rbac.Rbac(action=action, policies=policies),
        shadow_rules=rbac.Rbac(action=action, policies=shadow) if shadow else None,
        shadow_rules_stat_prefix=prefix if shadow else "",
    )
