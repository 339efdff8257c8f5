"""Host classes (how a host picks its policy files) and the authentication in force in each:
the workload and end-user principals every exported rule is built on."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from authz.export.envoy_api import m, rbac, route
from authz.export.matchers import (
    DOT_SEGMENT,
    HEADER_VALUE,
    PAYLOAD_KEY,
    SEG,
    TD,
    TRUSTED,
    p_and,
    p_meta,
    p_not,
    p_or,
    p_san,
    q_and,
    q_not,
    s_exact,
    s_regex,
)
from authz.policy.decide.compiler import merge_authentication
from authz.policy.language.spec import Authentication, FileSpec


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
class Auth:
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
                p_san(s_regex(f"{TRUSTED}(?:{tds})(?:/{SEG})*")),
                p_not(p_san(s_regex(DOT_SEGMENT))),
            ]
        )
    valid = p_and([p_san(s_regex(f"{TRUSTED}{TD}(?:/{SEG})*")), p_not(p_san(s_regex(DOT_SEGMENT)))])
    other = p_and([p_san(s_regex(HEADER_VALUE)), p_not(p_san(s_regex(f"(?i){TRUSTED}.*")))])
    return p_or([valid, other])


def _applies(f: FileSpec, host: str) -> bool:
    if f.hosts is None:
        return True
    return any(
        host == h or (h.startswith("*.") and host.endswith(h[1:]) and len(host) > len(h) - 1)
        for h in f.hosts
    )
