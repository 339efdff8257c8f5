"""Small constructors of Envoy's RBAC and matcher messages, and the regexes they share.

`s_*` build string matchers, `p_*` principals, `q_*` permissions. What the engine decides has
to be said with these; where it cannot, a rule's build raises `NotExportable`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from authz.export.envoy_api import m, rbac, route

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"  # jwt_authn's payload_in_metadata
HEADER_KEY = "header"  # jwt_authn's header_in_metadata
TRUSTED = re.escape("spiffe://")
# SPIFFE-ID.md (authz/identity/spiffe.py): a path segment is [A-Za-z0-9._-]+ but not . or ..
# Regexes stay small: Envoy refuses an RE2 program over 100 instructions by default.
SEG = "[A-Za-z0-9._-]+"
DOT_SEGMENT = r".*/\.\.?(?:/.*)?"  # a `.` or `..` segment: not a SPIFFE ID
TD = "[a-z0-9._-]+"
# authz/identity/header_value.py: no control character, no leading or trailing blank.
HEADER_VALUE = r"[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?"
# Python's str.split() whitespace, for space-separated scope/scp claims (RFC 8693 4.2).
WS = "[" + "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "]"
# authz/request/hosts.py normalize_host, after Envoy stripped the port and one trailing dot
# (`strip_trailing_host_dot`): a host that still ends in `.` was sent with more than one, and
# the contract refuses it (docs/policy.md, "One rule for ambiguous requests").
LABEL = "[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
VALID_HOST = f"(?i)(?:{LABEL}(?:\\.{LABEL})*|\\[[0-9a-f:.]+\\])?(?::[0-9]+)?"


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


def p_issuer(issuer: str) -> rbac.Principal:
    """A verified token from this issuer (its `iss` claim)."""
    return p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(string_match=s_exact(issuer)))


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
