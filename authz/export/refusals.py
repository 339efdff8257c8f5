"""What the engine answers before any rule, as RBAC DENY policies: an invalid path, method or
host (400s), and the verified tokens it refuses (no usable `sub`; no `kid` where the JWKS has
several keys)."""

from __future__ import annotations

from collections.abc import Sequence

from authz.export.envoy_api import m, rbac
from authz.export.hosts import Auth
from authz.export.jwt_authn import kid_required
from authz.export.matchers import (
    HEADER_KEY,
    HEADER_VALUE,
    PAYLOAD_KEY,
    VALID_HOST,
    p_and,
    p_any,
    p_issuer,
    p_meta,
    p_not,
    p_or,
    q_and,
    q_header,
    q_not,
    s_exact,
    s_regex,
)
from authz.policy.language.spec import JwtProvider


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

        def on_tokens(principal: rbac.Principal) -> rbac.Policy:
            return rbac.Policy(permissions=[rbac.Permission(any=True)], principals=[principal])

        # authz/identity/jwt.py: a verified token needs a sub that is a header value.
        policies["jwt_missing_claim"] = on_tokens(
            p_and(
                [
                    p_meta([PAYLOAD_KEY, "iss"], m.ValueMatcher(present_match=True)),
                    p_not(
                        p_meta(
                            [PAYLOAD_KEY, "sub"], m.ValueMatcher(string_match=s_regex(HEADER_VALUE))
                        )
                    ),
                ]
            )
        )
        several = [p for p in providers if kid_required(p)]
        if several:
            # authz/identity/jwks.py KeySet.find: without kid, only a single key is chosen; a
            # remote set needs a kid whatever its size (authz/identity/jwt.py).
            policies["jwt_kid_required"] = on_tokens(
                p_and(
                    [
                        p_or([p_issuer(p.issuer) for p in several]),
                        p_not(p_meta([HEADER_KEY, "kid"], m.ValueMatcher(present_match=True))),
                    ]
                )
            )
        listed = [p for p in providers if p.algorithms]
        if listed:
            # authz/identity/jwt.py: a provider that lists `algorithms` accepts only those.
            policies["jwt_alg_not_allowed"] = on_tokens(
                p_or(
                    [
                        p_and(
                            [
                                p_issuer(p.issuer),
                                p_not(
                                    p_or(
                                        [
                                            p_meta(
                                                [HEADER_KEY, "alg"],
                                                m.ValueMatcher(string_match=s_exact(alg)),
                                            )
                                            for alg in p.algorithms
                                        ]
                                    )
                                ),
                            ]
                        )
                        for p in listed
                    ]
                )
            )
    return policies
