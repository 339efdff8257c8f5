"""Each policy field's export to Envoy's RBAC filter: the hooks the declarations name.

authz/policy/fields.py and authz/policy/conditions.py point their `export` slot here (a field
without one is not exportable, and `authz export` says so rule by rule). A hook gets the
checked value of the field (the list, or True for a flag) and returns the positive match as a
typed RBAC `Principal` (from, when) or `Permission` (to); the caller applies `not_` forms, in
the same walk the compiler makes, so the export cannot drift from evaluation.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.rbac import v3 as rbac
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.type.matcher import v3 as m

from authz.export import paths as xpaths
from authz.export.envoy import ExportContext
from authz.export.hosts import _Auth
from authz.export.matchers import (
    _TRUSTED,
    _WS,
    PAYLOAD_KEY,
    NotExportable,
    p_and,
    p_any,
    p_meta,
    p_not,
    p_or,
    p_san,
    q_header,
    q_not,
    q_or,
    q_path,
    s_exact,
    s_regex,
)
from authz.policy.conditions import _LIST_STRING_CLAIMS
from authz.policy.spec import ConditionSpec


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
def _principal(auth: _Auth, value: str) -> rbac.Principal:
    # Istio's short form stands for the spiffe:// ID (authz/policy/patterns.py principal_patterns).
    if not value.startswith(("*", "spiffe://")):
        value = "spiffe://" + value
    matcher = _string_matcher(value)
    w = auth.workload
    return w if matcher is None else p_and([p_san(matcher), w])


@functools.lru_cache(maxsize=8192)
def _namespace(auth: _Auth, value: str) -> rbac.Principal:
    kind, text = _star(value)
    seg = {
        "any": "[^/]*",
        "prefix": re.escape(text) + "[^/]*",
        "suffix": "[^/]*" + re.escape(text),
        "exact": re.escape(text),
    }[kind]
    # the specific test first: it rules most peers out before the trust-domain check
    return p_and([p_san(s_regex(f"{_TRUSTED}[^/]+/ns/{seg}/sa/[^/]+")), auth.workload])


@functools.lru_cache(maxsize=8192)
def _request_principal(auth: _Auth, value: str) -> rbac.Principal:
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
                        p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(string_match=s_exact(iss))),
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
def _issuer(_: _Auth, value: str) -> rbac.Principal:
    return p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(string_match=s_exact(value)))


@functools.lru_cache(maxsize=8192)
def _ip_block(_: _Auth, value: str) -> rbac.Principal:
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
    """The positive operator on the claim at one metadata path (authz/policy/rules.py)."""
    listy = path[-1].rsplit(".", 1)[-1] in _LIST_STRING_CLAIMS
    where = [PAYLOAD_KEY, *path]

    def word_in_string(v: Any) -> list[rbac.Principal]:
        if not listy or not isinstance(v, str):
            return []
        regex = f"(?s)(?:.*{_WS})?{re.escape(v)}(?:{_WS}.*)?"
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


def _header(spec: ConditionSpec) -> rbac.Principal:
    name = spec.name
    if name.startswith(":"):
        raise NotExportable(f"header condition on {name}: Envoy's pseudo-header differs")
    matchers: list[route.HeaderMatcher]
    if spec.op == "present":
        matchers = [route.HeaderMatcher(name=name, present_match=True)]
        if spec.value is False:
            matchers = [route.HeaderMatcher(name=name, present_match=True, invert_match=True)]
    elif spec.op == "equals":
        matchers = [route.HeaderMatcher(name=name, string_match=s_exact(spec.value))]
    elif spec.op == "prefix":
        matchers = [route.HeaderMatcher(name=name, string_match=m.StringMatcher(prefix=spec.value))]
    else:
        matchers = [route.HeaderMatcher(name=name, string_match=s_exact(v)) for v in spec.value]
    positive = p_or([rbac.Principal(header=h) for h in matchers])
    return p_not(positive) if spec.negated else positive


# --- to -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def host_matcher(value: str) -> m.StringMatcher:
    if value.startswith("*."):
        # one or more labels before the suffix; the 400 policy refuses an empty first label
        return m.StringMatcher(suffix=value[1:], ignore_case=True)
    return s_exact(value, ignore_case=True)


def _path_permission(value: str, stripped: bool) -> rbac.Permission:
    if stripped:
        regex = xpaths.stripped_regex(value)
        return q_path(s_regex(regex)) if regex is not None else q_not(rbac.Permission(any=True))
    if value == "*":
        return rbac.Permission(any=True)
    if value.startswith("*"):
        return q_path(m.StringMatcher(suffix=value[1:]))
    if value.endswith("*"):
        return q_path(m.StringMatcher(prefix=value[:-1]))
    if "{" in value:
        return q_path(s_regex(xpaths.template_regex(value)))
    return q_path(s_exact(value))


# --- the hooks, by field (values are ORed; the caller negates `not_` forms) ----------------


def principals(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_principal(ctx.auth, v) for v in values])


def namespaces(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_namespace(ctx.auth, v) for v in values])


def request_principals(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_request_principal(ctx.auth, v) for v in values])


def issuers(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_issuer(ctx.auth, v) for v in values])


def ip_blocks(ctx: ExportContext, values: Sequence[str]) -> rbac.Principal:
    return p_or([_ip_block(ctx.auth, v) for v in values])


def authenticated(ctx: ExportContext, _: bool) -> rbac.Principal:
    return p_or([ctx.auth.workload, ctx.auth.user])


def methods(_: ExportContext, values: Sequence[str]) -> rbac.Permission:
    if "*" in values:  # Istio's any method
        return rbac.Permission(any=True)
    return q_or([_method(v) for v in values])


@functools.lru_cache(maxsize=1024)
def _method(value: str) -> rbac.Permission:
    return q_header(":method", s_exact(value))


def paths(ctx: ExportContext, values: Sequence[str]) -> rbac.Permission:
    return q_or([_path_permission(v, ctx.stripped) for v in values])


def hosts(_: ExportContext, values: Sequence[str]) -> rbac.Permission:
    return q_or([q_header(":authority", host_matcher(v)) for v in values])


def ports(_: ExportContext, values: Sequence[int]) -> rbac.Permission:
    return q_or([rbac.Permission(destination_port=v) for v in values])


def role(ctx: ExportContext, names: Sequence[str]) -> rbac.Permission:
    return q_or([ctx.to_entry(e) for n in names for e in ctx.roles[n]])


def claim(subject: str, op: str, value: Any) -> rbac.Principal:
    if op not in ("equals", "contains", "any_of", "present"):
        raise NotExportable(f"`claim` `{op}` has no equivalent in Envoy's RBAC filter")
    return _claim(ConditionSpec(0, "claim", subject, op, value))


def header(subject: str, op: str, value: Any) -> rbac.Principal:
    if op not in ("equals", "prefix", "any_of", "present"):
        raise NotExportable(f"`header` `{op}` has no equivalent in Envoy's RBAC filter")
    return _header(ConditionSpec(0, "header", subject, op, value))
