"""Istio's `trustDomainAliases`, resolved when a set is compiled (docs/policy.md, "Workload
identity").

A file's `trust_domains` plus its `trust_domain_aliases` name one set of equivalent trust
domains. Every principal pattern of the policy set written with a trust domain of such a set is
expanded to the same pattern in every trust domain of the set, so a check pays nothing for
aliases: it matches the principal it got against a longer list, built once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from authz.policy.language.spec import EntrySpec, FileSpec
from authz.request.syntax import SPIFFE_PREFIX as SPIFFE

_PRINCIPAL_KEYS = ("principals", "not_principals")


def equivalent_domains(files: Iterable[FileSpec]) -> dict[str, frozenset[str]]:
    """Each trust domain that has aliases -> every trust domain it is equivalent to."""
    groups: list[set[str]] = [
        {td.lower() for td in (*(f.trust_domains or ()), *f.trust_domain_aliases)}
        for f in files
        if f.trust_domain_aliases
    ]
    # Groups that share a trust domain are one group (one migration seen from two files).
    merged: list[set[str]] = []
    for group in groups:
        for other in [m for m in merged if m & group]:
            group |= other
            merged.remove(other)
        merged.append(group)
    return {td: frozenset(group) for group in merged for td in group}


def expand_principal(pattern: str, domains: dict[str, frozenset[str]]) -> tuple[str, ...]:
    """`pattern` and its spelling in every trust domain equivalent to the one it names."""
    scheme = SPIFFE if pattern.startswith(SPIFFE) else ""
    body = pattern[len(scheme) :]
    td, slash, rest = body.partition("/")
    if body.startswith("*") or not slash or td.lower() not in domains:
        return (pattern,)
    others = sorted(domains[td.lower()] - {td.lower()})
    return (pattern, *(f"{scheme}{other}/{rest}" for other in others))


def expand_aliases(files: Sequence[FileSpec]) -> list[FileSpec]:
    """The files with every principal pattern expanded over its equivalent trust domains."""
    domains = equivalent_domains(files)
    if not domains:
        return list(files)
    return [_file(f, domains) for f in files]


def _file(f: FileSpec, domains: dict[str, frozenset[str]]) -> FileSpec:
    rules = tuple(
        replace(r, from_=tuple(_entry(e, domains) for e in r.from_)) if r.from_ is not None else r
        for r in f.rules
    )
    return replace(f, rules=rules)


def _entry(entry: EntrySpec, domains: dict[str, frozenset[str]]) -> EntrySpec:
    changes = {}
    for key in _PRINCIPAL_KEYS:
        patterns = entry.get(key)
        if patterns is not None:
            changes[key] = tuple(
                dict.fromkeys(p for pattern in patterns for p in expand_principal(pattern, domains))
            )
    return entry.replace(**changes) if changes else entry
