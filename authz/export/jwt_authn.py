"""The `envoy.filters.http.jwt_authn` filter: the providers, and per host class which of
them a present token must verify against."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from authz.export.envoy_api import Empty, core, jwt, route
from authz.export.hosts import HostClass
from authz.export.matchers import HEADER_KEY, PAYLOAD_KEY
from authz.export.remote_jwks import RemoteSet, remote_jwks
from authz.export.render import Finding
from authz.policy.language.conditions import CONDITION_KINDS
from authz.policy.language.fields import FROM_FIELDS
from authz.policy.language.spec import JwtProvider, RuleSpec


def _jwks_text(p: JwtProvider) -> str | None:
    if p.jwks_json is not None:
        return p.jwks_json
    if p.jwks_file is not None:
        with open(p.jwks_file, encoding="utf-8") as f:
            return f.read()
    return None


def key_count(p: JwtProvider) -> int:
    text = _jwks_text(p)
    try:
        keys = json.loads(text).get("keys", []) if text else []
    except (ValueError, AttributeError):
        return 0
    return len(keys) if isinstance(keys, list) else 0


def is_remote(p: JwtProvider) -> bool:
    return p.jwks_uri is not None or p.discovery


def kid_required(p: JwtProvider) -> bool:
    """The service refuses a token without kid: the set has several keys, or is remote (its
    size may change between fetches, authz/identity/jwt.py)."""
    return is_remote(p) or key_count(p) > 1


def reads_header(p: JwtProvider) -> bool:
    """Whether a refusal reads this provider's verified token header (refusals.py)."""
    return kid_required(p) or bool(p.algorithms)


def provider_findings(p: JwtProvider, file: str) -> list[Finding]:
    out: list[Finding] = []
    where = (file, 1, f"provider {p.issuer}")
    for loc in p.locations:
        if loc.query is not None or loc.cookie is not None:
            kind = f"query {loc.query}" if loc.query is not None else f"cookie {loc.cookie}"
            out.append(
                Finding(
                    *where,
                    f"from: {kind}: jwt_authn reads the first of two values, where the service "
                    "refuses two different tokens (and reads every spelling of a parameter's "
                    "name); only a header's joined value can be checked first",
                )
            )
        if sum(c.isalpha() for c in loc.prefix) > MAX_PREFIX_LETTERS:
            out.append(
                Finding(
                    *where,
                    f"from: prefix {loc.prefix!r}: jwt_authn compares a prefix case-sensitively; "
                    f"the export lists every spelling, for at most {MAX_PREFIX_LETTERS} letters",
                )
            )
    if p.claims_to_headers:
        out.append(
            Finding(
                *where,
                "claims_to_headers: jwt_authn sets only string, number and boolean claims",
                decides=False,
            )
        )
    return out


# jwt_authn compares `value_prefix` case-sensitively; the service reads the auth scheme in
# any case (RFC 9110 section 11.1). One `from_headers` entry per spelling makes Envoy read the
# same token; the refusal of every other spelling (refusals.py) makes the rest equal.
MAX_PREFIX_LETTERS = 8


def prefix_spellings(prefix: str) -> list[str]:
    """Every upper/lower-case spelling of `prefix` (2 ** letters of them)."""
    out = [""]
    for c in prefix:
        options = {c.lower(), c.upper()} if c.isascii() and c.isalpha() else {c}
        out = [head + o for head in out for o in sorted(options)]
    return out


def _jwt_provider(p: JwtProvider, remote: RemoteSet | None, refresh: float) -> jwt.JwtProvider:
    headers = [
        jwt.JwtHeader(name=loc.header, value_prefix=spelling)
        for loc in p.locations
        if loc.header is not None
        for spelling in prefix_spellings(loc.prefix)
    ]
    text = _jwks_text(p)
    return jwt.JwtProvider(
        issuer=p.issuer,
        audiences=list(p.audiences),
        local_jwks=core.DataSource(inline_string=text) if text is not None else None,
        remote_jwks=remote_jwks(remote, refresh) if remote is not None else None,
        forward=p.forward,
        from_headers=headers,
        from_params=[loc.query for loc in p.locations if loc.query is not None],
        from_cookies=[loc.cookie for loc in p.locations if loc.cookie is not None],
        payload_in_metadata=PAYLOAD_KEY,
        # Only read by the refusals on the token's header (refusals.py): no kid for a JWKS of
        # several keys, an algorithm the provider does not list.
        header_in_metadata=HEADER_KEY if reads_header(p) else "",
        clock_skew_seconds=60,
        claim_to_headers=[
            jwt.JwtClaimToHeader(header_name=h, claim_name=c) for c, h in p.claims_to_headers
        ],
    )


def needs_jwt(rule: RuleSpec) -> bool:
    """As the compiler's `needs_jwt` (authz/policy/decide/rules.py): claims, or a JWT-only field."""
    return any(k.needs_jwt for c in rule.when for k in CONDITION_KINDS if k.name == c.kind) or any(
        e.get(f.name) is not None for e in rule.from_ or () for f in FROM_FIELDS if f.needs_jwt
    )


def jwt_authn(
    providers: Sequence[JwtProvider],
    classes: Sequence[HostClass],
    remotes: Mapping[JwtProvider, RemoteSet],
    refresh_seconds: float,
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
        providers={n: _jwt_provider(p, remotes.get(p), refresh_seconds) for p, n in names.items()},
        rules=rules,
    )
