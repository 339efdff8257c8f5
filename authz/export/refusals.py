"""What the engine answers before any rule, as RBAC DENY policies: an invalid path, method or
host (400s), and the verified tokens it refuses (no usable `sub`; no `kid` where the JWKS has
several keys)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy_data_plane.envoy.config.rbac import v3 as rbac
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.type.matcher import v3 as m

from authz.export.hosts import Auth
from authz.export.jwt_authn import key_count
from authz.export.matchers import (
    HEADER_KEY,
    HEADER_VALUE,
    PAYLOAD_KEY,
    VALID_HOST,
    p_and,
    p_any,
    p_meta,
    p_not,
    p_or,
    q_and,
    q_header,
    q_not,
    q_or,
    s_exact,
    s_regex,
)
from authz.identity.lookup import header_token_regex, prefix_regex
from authz.policy.spec import JwtProvider


def refusals(auth: Auth, providers: Sequence[JwtProvider]) -> dict[str, rbac.Policy]:
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
            permissions=[q_not(q_header(":authority", s_regex(VALID_HOST)))],
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
                                m.ValueMatcher(string_match=s_regex(HEADER_VALUE)),
                            )
                        ),
                    ]
                )
            ],
        )
        several = [p for p in providers if key_count(p) > 1]
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
        spelling = _token_spellings(auth)
        if spelling is not None:
            policies["jwt_malformed"] = spelling
    return policies


def _token_spellings(auth: Auth) -> rbac.Policy | None:
    """A token header that mentions its prefix (in any case) but is not exactly the prefix and
    one token: the service refuses it (authz/identity/lookup.py), and jwt_authn, which finds
    the prefix anywhere in the joined value, might read another token than the service would."""
    where: dict[tuple[str, str], list[rbac.Permission]] = {}
    for c in auth.classes:
        for p in c.authentication.jwt_providers:
            for loc in p.locations:
                if loc.header is not None:
                    places = where.setdefault((loc.header.lower(), loc.prefix), [])
                    if c.permission() not in places:
                        places.append(c.permission())
    if not where:
        return None
    permissions: list[rbac.Permission] = []
    for (header, prefix), places in sorted(where.items(), key=lambda kv: kv[0]):
        bad = q_not(q_header(header, s_regex(header_token_regex(prefix))))
        mentioned = (
            q_header(header, s_regex(f"(?s).*{prefix_regex(prefix)}.*"))
            if prefix
            else rbac.Permission(header=route.HeaderMatcher(name=header, present_match=True))
        )
        scope = [] if len(places) == len(auth.classes) else [q_or(places)]
        permissions.append(q_and([mentioned, bad, *scope]))
    return rbac.Policy(permissions=permissions, principals=[p_any()])
