"""Compiled host policy + Request + Identity -> Decision (docs/policy.md, "The decision").

Pure: no I/O, no logging, no clock. The order is the contract's:
1. an enforced `deny` rule matches: deny, 403, reason = the rule's name;
2. an enforced `allow` rule matches: allow, 200, reason = the rule's name;
3. otherwise deny with `no_matching_rule`: 401 with an RFC 6750 `Bearer` challenge when the
   request has no verified JWT and an enforced allow rule whose `to` matches needs one, else 403
   (likewise an `ApiKey realm="<provider>"` challenge for a rule that needs an API key).
`audit` and `dry_run` rules never change the decision; every one that matches is listed in
`Decision.shadow`. When several deny (or allow) rules match, the first in set order (files by
name, then their order in the file) gives the reason.

A request that can be read several ways (a `;param` path, a repeated header or query parameter)
is judged once: each compiled deny rule holds when it holds under any reading, each allow rule
only when it holds under every reading (`authz.policy.decide.rules.quantifier_for`).
"""

from __future__ import annotations

from authz.model import Decision, Identity, Request, ShadowMatch
from authz.policy.decide.compiler import HostPolicy
from authz.policy.decide.context import RequestContext
from authz.policy.decide.rules import CompiledRule
from authz.reasons import Reason

NO_MATCHING_RULE = Reason.NO_MATCHING_RULE
NO_POLICY_FOR_HOST = Reason.NO_POLICY_FOR_HOST
BEARER_CHALLENGE = "Bearer"

_NO_POLICY = Decision(allowed=False, status=403, reason=NO_POLICY_FOR_HOST)


def api_key_challenge(provider: str) -> str:
    """The challenge naming an API-key provider (names are policy tokens: no quote in them)."""
    return f'ApiKey realm="{provider}"'


def no_policy_decision() -> Decision:
    """The decision when no policy file applies to the request's host."""
    return _NO_POLICY


def evaluate(host_policy: HostPolicy | None, request: Request, identity: Identity) -> Decision:
    """Decide one request. `host_policy` None (no applying file) denies `no_policy_for_host`."""
    if host_policy is None:
        return _NO_POLICY
    ctx = RequestContext(request, identity, host_policy.authentication)
    deny: CompiledRule | None = None
    allow: CompiledRule | None = None
    shadow: list[ShadowMatch] = []
    wants_jwt = wants_key = False
    for rule in host_policy.candidates_of(ctx.method, ctx.paths):
        if not rule.to_matches(ctx):
            continue
        if rule.from_and_when_match(ctx):
            if not rule.enforced:
                shadow.append(ShadowMatch(rule.name, rule.action, rule.dry_run))
            elif rule.action == "deny":
                deny = deny or rule
            else:
                allow = allow or rule
        elif rule.action == "allow" and rule.enforced:
            wants_jwt = wants_jwt or (rule.needs_jwt and ctx.user is None)
            wants_key = wants_key or (rule.needs_api_key and ctx.api_key is None)
    shadows = tuple(shadow)
    if deny is not None:
        return Decision(False, 403, deny.name, rule=deny.name, shadow=shadows)
    if allow is not None:
        return Decision(True, 200, allow.name, rule=allow.name, shadow=shadows)
    if wants_jwt or wants_key:
        challenges = [BEARER_CHALLENGE] if wants_jwt else []
        if wants_key:
            providers = host_policy.authentication.api_key_providers
            challenges.extend(api_key_challenge(p.name) for p in providers)
        # RFC 9110 section 11.6.1: one WWW-Authenticate may list several challenges.
        challenge = ", ".join(challenges)
        return Decision(False, 401, NO_MATCHING_RULE, shadow=shadows, challenge=challenge)
    return Decision(False, 403, NO_MATCHING_RULE, shadow=shadows)
