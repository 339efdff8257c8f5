"""The `authz.tokens` filter: the token-header spellings the service refuses, denied before
jwt_authn reads them.

The service reads a token header only in one spelling (authz/identity/lookup.py): when its
value mentions the prefix at all, in any case, it must be the prefix and one base64url token;
a header sent twice is joined with "," and so refused too. jwt_authn finds the prefix anywhere
and reads one header of several, and RBAC's `rules` match a repeated header value by value:
only the RBAC filter's matcher tree sees the joined value (HttpRequestHeaderMatchInput joins
repeats with ","), so this one filter is written in that form. It is plain protobuf JSON
rather than typed objects: its inputs and actions are `Any`-packed extensions.
"""

from __future__ import annotations

import itertools
from typing import Any

from authz.export.envoy_api import m
from authz.export.hosts import Auth, HostClass
from authz.export.render import to_json
from authz.identity.lookup import header_token_regex, mentions_regex

_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_ACTION = "type.googleapis.com/envoy.config.rbac.v3.Action"


def _single(header: str, match: dict[str, Any]) -> dict[str, Any]:
    return {
        "single_predicate": {
            "input": {"name": header, "typed_config": {"@type": _INPUT, "header_name": header}},
            "value_match": match,
        }
    }


def _regex(regex: str) -> dict[str, Any]:
    return {"safe_regex": {"google_re2": {}, "regex": regex}}


def _all(predicates: list[dict[str, Any]]) -> dict[str, Any]:
    return predicates[0] if len(predicates) == 1 else {"and_matcher": {"predicate": predicates}}


def _any(predicates: list[dict[str, Any]]) -> dict[str, Any]:
    return predicates[0] if len(predicates) == 1 else {"or_matcher": {"predicate": predicates}}


def _action(name: str, action: str) -> dict[str, Any]:
    return {
        "action": {"name": name, "typed_config": {"@type": _ACTION, "name": name, "action": action}}
    }


def _host(c: HostClass) -> dict[str, Any]:
    parts = []
    for h, negated in c.header_matchers():
        assert isinstance(h.string_match, m.StringMatcher)
        one = _single(":authority", to_json(h.string_match))
        parts.append({"not_matcher": one} if negated else one)
    return _all(parts) if parts else _single(":authority", _regex("(?s).*"))


def _mentioned(header: str, prefix: str) -> dict[str, Any]:
    """The header holds a token for `prefix` (or a refused spelling of one). An absent header is
    no input: a single predicate on it never matches."""
    return _single(header, _regex(mentions_regex(prefix) if prefix else "(?s).*"))


def _scope(auth: Auth, classes: list[HostClass]) -> list[dict[str, Any]]:
    return [] if len(classes) == len(auth.classes) else [_any([_host(c) for c in classes])]


Location = tuple[str, str]  # (lower-case header name, prefix)


def _header_pairs(auth: Auth) -> dict[tuple[Location, Location], list[HostClass]]:
    """Two token headers of one host class (different names), with the classes reading both."""
    pairs: dict[tuple[Location, Location], list[HostClass]] = {}
    for c in auth.classes:
        read = sorted(
            {
                (loc.header.lower(), loc.prefix)
                for p in c.authentication.jwt_providers
                for loc in p.locations
                if loc.header is not None
            }
        )
        for one, two in itertools.combinations(read, 2):
            if one[0] != two[0]:
                pairs.setdefault((one, two), []).append(c)
    return pairs


def tokens_filter(auth: Auth) -> dict[str, Any]:
    """The RBAC filter (protobuf JSON, without @type) denying the refused spellings on the
    hosts whose providers read that header."""
    where: dict[tuple[str, str], list[HostClass]] = {}
    for c in auth.classes:
        for p in c.authentication.jwt_providers:
            for loc in p.locations:
                if loc.header is not None:
                    classes = where.setdefault((loc.header.lower(), loc.prefix), [])
                    if c not in classes:
                        classes.append(c)
    matchers = []
    for (header, prefix), classes in sorted(where.items(), key=lambda kv: kv[0]):
        bad = {"not_matcher": _single(header, _regex(header_token_regex(prefix)))}
        matchers.append(
            {
                "predicate": _all([_mentioned(header, prefix), bad, *_scope(auth, classes)]),
                "on_match": _action("jwt_malformed", "DENY"),
            }
        )
    for (one, two), classes in sorted(_header_pairs(auth).items(), key=lambda kv: kv[0]):
        # authz/identity/lookup.py: a token in two places is refused (token_in_two_places);
        # jwt_authn would verify both copies and remove them, but the service refuses the
        # request, and two different tokens are refused there too (jwt_malformed).
        matchers.append(
            {
                "predicate": _all([_mentioned(*one), _mentioned(*two), *_scope(auth, classes)]),
                "on_match": _action("token_in_two_places", "DENY"),
            }
        )
    return {
        "matcher": {
            **({"matcher_list": {"matchers": matchers}} if matchers else {}),
            "on_no_match": _action("token_spelling_ok", "ALLOW"),
        }
    }
