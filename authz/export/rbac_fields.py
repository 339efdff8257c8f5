"""Each policy field's export to Envoy's RBAC filter.

authz/export/field_table.py maps every declared field and condition kind to one of these (or to
a refusal). A field's export gets the checked value (the list, or True for a flag) and returns
the positive match as a typed RBAC `Principal` (from, when) or `Permission` (to) under the
context's reading mode; the walker (authz/export/rules.py) applies `not_` forms, in the same
walk the compiler makes, so the export cannot drift from evaluation.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from authz.export import paths as xpaths
from authz.export.context import ExportContext
from authz.export.envoy_api import core, m, rbac, route
from authz.export.hosts import Auth
from authz.export.matchers import (
    PAYLOAD_KEY,
    TRUSTED,
    WS,
    NotExportable,
    p_and,
    p_any,
    p_issuer,
    p_meta,
    p_not,
    p_or,
    p_san,
    q_and,
    q_header,
    q_not,
    q_or,
    q_path,
    s_exact,
    s_regex,
)
from authz.policy.language import patterns as pat
from authz.policy.language.conditions import LIST_STRING_CLAIMS
from authz.policy.language.spec import ConditionSpec

# Envoy's `merge_slashes` leaves a path of slashes only as `//` (it keeps the leading and the
# trailing one), which the service merges to `/` (docs/policy.md, path normalization).
SLASHES = "//"


def _star(value: str) -> tuple[str, str]:
    """(kind, text) of an Istio `*` pattern: ("any", ""), ("prefix", p), ("suffix", s),
    ("exact", v)."""
    if value == "*":
        return "any", ""
    if value.startswith("*"):
        return "suffix", value[1:]
    if value.endswith("*"):
        return "prefix", value[:-1]
    return "exact", value


def _string_matcher(value: str) -> m.StringMatcher | None:
    kind, text = _star(value)
    if kind == "any":
        return None
    if kind == "suffix":
        return m.StringMatcher(suffix=text)
    if kind == "prefix":
        return m.StringMatcher(prefix=text)
    return s_exact(text)


@functools.lru_cache(maxsize=8192)
def _principal(auth: Auth, value: str) -> rbac.Principal:
    # Istio's short form stands for the spiffe:// ID (authz/policy/language/patterns.py
    # principal_patterns).
    if not value.startswith(("*", "spiffe://")):
        value = "spiffe://" + value
    matcher = _string_matcher(value)
    w = auth.workload
    return w if matcher is None else p_and([p_san(matcher), w])


@functools.lru_cache(maxsize=8192)
def _namespace(auth: Auth, value: str) -> rbac.Principal:
    kind, text = _star(value)
    seg = {
        "any": "[^/]*",
        "prefix": re.escape(text) + "[^/]*",
        "suffix": "[^/]*" + re.escape(text),
        "exact": re.escape(text),
    }[kind]
    # the specific test first: it rules most peers out before the trust-domain check
    return p_and([p_san(s_regex(f"{TRUSTED}[^/]+/ns/{seg}/sa/[^/]+")), auth.workload])


@functools.lru_cache(maxsize=8192)
def _request_principal(auth: Auth, value: str) -> rbac.Principal:
    """`<iss>/<sub>` patterns, split over the known issuers (the metadata holds iss and sub)."""
    kind, text = _star(value)
    options: list[rbac.Principal] = []
    for iss in auth.issuers:
        head = iss + "/"
        subs: list[m.StringMatcher] = []
        if kind == "any":
            subs.append(s_regex(".+"))
        elif kind == "exact":
            if text.startswith(head) and len(text) > len(head):
                subs.append(s_exact(text[len(head) :]))
        elif kind == "prefix":
            if head.startswith(text):
                subs.append(s_regex(".+"))
            elif text.startswith(head):
                subs.append(m.StringMatcher(prefix=text[len(head) :]))
        else:  # suffix: within sub, or reaching back into "<iss>/"
            subs.append(m.StringMatcher(suffix=text))
            for k in range(1, len(text)):
                if head.endswith(text[:k]):
                    subs.append(s_exact(text[k:]))
        if subs:
            options.append(
                p_and(
                    [
                        p_issuer(iss),
                        p_or(
                            [
                                p_meta([PAYLOAD_KEY, "sub"], m.ValueMatcher(string_match=s))
                                for s in subs
                            ]
                        ),
                    ]
                )
            )
    return p_or(options) if options else p_not(p_any())


@functools.lru_cache(maxsize=8192)
def _issuer(_: Auth, value: str) -> rbac.Principal:
    return p_issuer(value)


@functools.lru_cache(maxsize=8192)
def _ip_block(_: Auth, value: str) -> rbac.Principal:
    net = ipaddress.ip_network(value, strict=True)
    ranges = [core.CidrRange(address_prefix=str(net.network_address), prefix_len=net.prefixlen)]
    if isinstance(net, ipaddress.IPv4Network):
        # The engine matches an IPv4-mapped IPv6 peer against IPv4 blocks.
        mapped = ipaddress.IPv6Address(f"::ffff:{net.network_address}")
        ranges.append(core.CidrRange(address_prefix=str(mapped), prefix_len=96 + net.prefixlen))
    return p_or([rbac.Principal(direct_remote_ip=r) for r in ranges])


# --- conditions -------------------------------------------------------------------------------


def _value(v: Any) -> m.ValueMatcher:
    if isinstance(v, bool):
        return m.ValueMatcher(bool_match=v)
    if isinstance(v, (int, float)):
        return m.ValueMatcher(double_match=m.DoubleMatcher(exact=float(v)))
    return m.ValueMatcher(string_match=s_exact(v))


def _claim_at(path: Sequence[str], spec: ConditionSpec) -> rbac.Principal:
    """The positive operator on the claim at one metadata path (authz/policy/decide/rules.py)."""
    listy = path[-1].rsplit(".", 1)[-1] in LIST_STRING_CLAIMS
    where = [PAYLOAD_KEY, *path]

    def word_in_string(v: Any) -> list[rbac.Principal]:
        if not listy or not isinstance(v, str):
            return []
        regex = f"(?s)(?:.*{WS})?{re.escape(v)}(?:{WS}.*)?"
        return [p_meta(where, m.ValueMatcher(string_match=s_regex(regex)))]

    def item(v: Any) -> rbac.Principal:
        return p_meta(where, m.ValueMatcher(list_match=m.ListMatcher(one_of=_value(v))))

    if spec.op == "present":
        return p_meta(where, m.ValueMatcher(present_match=True))
    if spec.op == "equals":
        return p_meta(where, _value(spec.value))
    if spec.op == "contains":
        return p_or([item(spec.value), *word_in_string(spec.value)])
    options: list[rbac.Principal] = []
    for v in spec.value:
        options += [p_meta(where, _value(v)), item(v), *word_in_string(v)]
    return p_or(options)


def _claim(spec: ConditionSpec) -> rbac.Principal:
    name = spec.name
    if spec.op == "present" and spec.value is False:
        positive = _claim(ConditionSpec(spec.line, spec.kind, name, "present", True))
        return positive if spec.negated else p_not(positive)
    if "." in name:
        # A top-level claim named with dots wins over the nested path (claim_value).
        whole = p_meta([PAYLOAD_KEY, name], m.ValueMatcher(present_match=True))
        positive = p_or(
            [
                p_and([whole, _claim_at([name], spec)]),
                p_and([p_not(whole), _claim_at(name.split("."), spec)]),
            ]
        )
    else:
        positive = _claim_at([name], spec)
    return p_not(positive) if spec.negated else positive


# A header sent several times reaches the service joined with ","; the service reads each
# comma-separated element, blanks around it trimmed (docs/policy.md, "Rules"). Envoy's RBAC
# matches each value of a repeated header on its own, and holds when some value matches: so
# "some element" is "some value has an element", and its negation "no element"; "every
# element" (an allow rule's condition, a deny rule's `not_` form) cannot be said.
_OWS = "[ \\t]*"


def _some_element(element: str) -> m.StringMatcher:
    return s_regex(f"(?s)(?:.*,)?{_OWS}(?:{element}){_OWS}(?:,.*)?")


def _header(spec: ConditionSpec, every: bool) -> rbac.Principal:
    name = spec.name
    if name.startswith(":"):
        raise NotExportable(f"header condition on {name}: Envoy's pseudo-header differs")
    if spec.op == "present":
        present = rbac.Principal(header=route.HeaderMatcher(name=name, present_match=True))
        return present if spec.value else p_not(present)
    if every:
        raise NotExportable(
            f"header condition on {name}: an allow rule's condition (a deny rule's `not_` "
            "form) must hold for every element of a repeated header, and Envoy's RBAC "
            "matches a header's values one by one"
        )
    values = [spec.value] if spec.op in ("equals", "prefix") else list(spec.value)
    # An element never holds a ",": such a value matches no element.
    values = [v for v in values if "," not in v]
    if not values:
        return p_not(p_any())
    alternatives = "|".join(re.escape(v) for v in values)
    if spec.op == "prefix":
        alternatives = f"(?:{alternatives})[^,]*"
    return rbac.Principal(
        header=route.HeaderMatcher(name=name, string_match=_some_element(alternatives))
    )


# --- to -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def host_matcher(value: str) -> m.StringMatcher:
    if value.startswith("*."):
        # one or more labels before the suffix; the 400 policy refuses an empty first label
        return m.StringMatcher(suffix=value[1:], ignore_case=True)
    return s_exact(value, ignore_case=True)


@functools.lru_cache(maxsize=8192)
def _path_permission(value: str, stripped: bool) -> rbac.Permission:
    if stripped:
        regex = xpaths.stripped_regex(value)
        return q_path(s_regex(regex)) if regex is not None else q_not(rbac.Permission(any=True))
    plain = _plain_path(value)
    # `//` is the service's `/`: give it the answer the service's own matcher gives `/`.
    service = pat.path_patterns([value]).matches("/")
    if service == _envoy_matches_slashes(value):
        return plain
    slashes = q_path(s_exact(SLASHES))
    return q_or([slashes, plain]) if service else q_and([q_not(slashes), plain])


def _plain_path(value: str) -> rbac.Permission:
    if value == "*":
        return rbac.Permission(any=True)
    if value.startswith("*"):
        return q_path(m.StringMatcher(suffix=value[1:]))
    if value.endswith("*"):
        return q_path(m.StringMatcher(prefix=value[:-1]))
    if "{" in value:
        return q_path(s_regex(xpaths.template_regex(value)))
    return q_path(s_exact(value))


def _envoy_matches_slashes(value: str) -> bool:
    """Whether `_plain_path(value)` matches the url_path `//` (RE2 and Python agree on these)."""
    if value == "*":
        return True
    if value.startswith("*"):
        return SLASHES.endswith(value[1:])
    if value.endswith("*"):
        return SLASHES.startswith(value[:-1])
    if "{" in value:
        # The regex starts with the text before the first `{`, escaped: when that text cannot
        # start `//`, there is no regex to compile (a big set has thousands of templates).
        if not SLASHES.startswith(value[: value.index("{")]):
            return False
        return re.fullmatch(xpaths.template_regex(value), SLASHES) is not None
    return value == SLASHES


# --- the exports, by field (values are ORed; the walker negates `not_` forms) --------------


def _one_reading(ctx: ExportContext, field: str) -> None:
    """Envoy's RBAC matches a peer when any SAN of its certificate matches; the service reads
    one (an X.509-SVID has exactly one URI SAN). That is the contract's reading for a deny
    rule, never for an allow rule's positive match, unless the operator says the mesh CA
    issues SVIDs alone (`--svid-only`; docs/export.md)."""
    if ctx.every and not ctx.svid_only:
        raise NotExportable(
            f"`{field}`: Envoy's RBAC matches any SAN of a certificate, and here (an allow rule, "
            "or a deny rule's `not_` form) the match must hold for every SAN; export with "
            "--svid-only if the mesh CA issues SVIDs alone"
        )


def principals(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    _one_reading(ctx, "principals")
    return p_or([_principal(ctx.auth, v) for v in values])


def namespaces(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    _one_reading(ctx, "namespaces")
    return p_or([_namespace(ctx.auth, v) for v in values])


def request_principals(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_request_principal(ctx.auth, v) for v in values])


def issuers(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_issuer(ctx.auth, v) for v in values])


def ip_blocks(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_ip_block(ctx.auth, v) for v in values])


def authenticated(ctx: ExportContext, _: bool) -> rbac.Principal:
    _one_reading(ctx, "authenticated")
    return p_or([ctx.auth.workload, ctx.auth.user])


def methods(_: ExportContext, values: Sequence[str]) -> rbac.Permission:
    if "*" in values:  # Istio's any method
        return rbac.Permission(any=True)
    return q_or([_method(v) for v in values])


@functools.lru_cache(maxsize=1024)
def _method(value: str) -> rbac.Permission:
    return q_header(":method", s_exact(value))


def paths(ctx: ExportContext, values: Sequence[str]) -> rbac.Permission:
    if ctx.view != "both":
        return q_or([_path_permission(v, ctx.view == "cut") for v in values])
    if ctx.every:
        return q_or([_every_reading(v) for v in values])
    return q_or([_some_reading(v) for v in values])


# The path has a ';': its `;params`-cut reading may differ from the path as sent.
HAS_PARAM = q_header(":path", m.StringMatcher(contains=";"))


@functools.lru_cache(maxsize=8192)
def _every_reading(value: str) -> rbac.Permission:
    """`value` matches the path as sent and, when it has a ';', the path with `;params` cut.

    Where the plain match implies the cut one, nothing is added: an exact, prefix or `{**}`
    pattern without ';' matched by the path as sent has no ';' in its literal part, so cutting
    params leaves that part alone. A `{*}` segment stays non-empty once cut unless it starts
    with ';'. Suffixes (`*.json` and `/secret/data;.json`) and patterns with a ';' need both.
    """
    plain = _path_permission(value, False)
    if ";" not in value and not value.startswith("*") and value != "*":
        if "{" not in value or all(s == "{**}" or not s.startswith("{") for s in value.split("/")):
            return plain
        if _envoy_matches_slashes(value) == pat.path_patterns([value]).matches("/"):
            regex = xpaths.template_regex(value).replace("[^/]+", "[^/;][^/]*")
            return q_path(s_regex(regex))
    if value == "*":
        return plain
    return q_and([plain, q_or([q_not(HAS_PARAM), _path_permission(value, True)])])


@functools.lru_cache(maxsize=8192)
def _some_reading(value: str) -> rbac.Permission:
    """`value` matches the path as sent, or the path with `;params` cut (the negation of an
    allow rule's `not_paths` is "no reading matches")."""
    plain = _path_permission(value, False)
    if value == "*":
        return plain
    return q_or([plain, q_and([HAS_PARAM, _path_permission(value, True)])])


def hosts(_: ExportContext, values: Sequence[str]) -> rbac.Permission:
    return q_or([q_header(":authority", host_matcher(v)) for v in values])


def ports(_: ExportContext, values: Sequence[int]) -> rbac.Permission:
    return q_or([rbac.Permission(destination_port=v) for v in values])


def role(ctx: ExportContext, names: Sequence[str]) -> rbac.Permission:
    return q_or([ctx.to_entry(ctx, e) for n in names for e in ctx.roles[n]])


def claim(_: ExportContext, subject: str, op: str, value: Any) -> rbac.Principal:
    if op not in ("equals", "contains", "any_of", "present"):
        raise NotExportable(f"`claim` `{op}` has no equivalent in Envoy's RBAC filter")
    return _claim(ConditionSpec(0, "claim", subject, op, value))


def header(ctx: ExportContext, subject: str, op: str, value: Any) -> rbac.Principal:
    if op not in ("equals", "prefix", "any_of", "present"):
        raise NotExportable(f"`header` `{op}` has no equivalent in Envoy's RBAC filter")
    return _header(ConditionSpec(0, "header", subject, op, value), ctx.every)
