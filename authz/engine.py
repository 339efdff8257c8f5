"""Request -> Verdict: identity, then policy, then what the upstream must be told.

The engine is synchronous and does no I/O: keys are fetched in the background by the
`KeyRegistry` (a check may wait, bounded, for the refetch its token's unknown kid triggered),
policies are compiled off the request path, and the current policy set is read once per check
so a reload in flight never mixes two sets. Repeated requests are answered from a
`DecisionCache` (see `authz.decision_cache` for what a hit must still satisfy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from authz.claims import nested_claim, scalar_text
from authz.config import HeaderNames
from authz.decision_cache import Cached, DecisionCache, entry_size, request_key
from authz.errors import ApiKeyRejected, AuthzError, TokenRejected
from authz.identity import IdentityResolver, KeyWait, is_header_value
from authz.identity.jwt import CLOCK_SKEW_SECONDS
from authz.limits import Limiter, LocalCounter
from authz.limits.stage import Plan
from authz.model import (
    ANONYMOUS,
    FROM_CACHE,
    Decision,
    Evidence,
    Identity,
    Request,
    TokenCheck,
    Verdict,
)
from authz.policy import HostPolicy, PolicySet, PolicyStore, evaluate, no_policy_decision
from authz.policy.decide.context import RequestContext
from authz.policy.decide.evaluate import api_key_challenge
from authz.policy.language.spec import ApiKeyProvider
from authz.reasons import Reason
from authz.request.cookies import without_cookies
from authz.request.query import spellings


def new_decision_id(_urandom: Callable[[int], bytes] = os.urandom) -> str:
    """A random UUIDv7 (RFC 9562 section 5.7): 48 bits of Unix milliseconds, then 74 random
    bits. Unique across replicas without coordination, sortable by time, and it tells a client
    nothing about how many checks the process answered (a counter would). About 1 us: os.urandom
    is a syscall but thread-safe, which a buffered random pool shared by threads would not be.
    """
    ms = f"{time.time_ns() // 1_000_000:012x}"
    rand = _urandom(10)
    h = rand.hex()
    # version nibble 7; variant bits 10 (one of 8, 9, a, b) followed by 62 random bits
    return f"{ms[:8]}-{ms[8:]}-7{h[:3]}-{_VARIANT[rand[9] & 3]}{h[3:6]}-{h[6:18]}"


_VARIANT = "89ab"


def rejection(error: AuthzError) -> Decision:
    """The decision for a request we refuse before policy: bad input, or a rejected token."""
    challenge = None
    if isinstance(error, TokenRejected):
        # RFC 6750 section 3.1: more than one method of sending the token is invalid_request.
        code = "invalid_request" if error.reason is Reason.TOKEN_IN_TWO_PLACES else "invalid_token"
        challenge = _bearer_challenge(code, str(error))
    elif isinstance(error, ApiKeyRejected):
        challenge = api_key_challenge(error.realm)
    return Decision(allowed=False, status=error.status, reason=error.reason, challenge=challenge)


def _bearer_challenge(code: str, description: str) -> str:
    # RFC 6750 section 3: error_description is a quoted-string of printable ASCII
    # without '"' or '\'.
    safe = "".join(c for c in description if 0x20 <= ord(c) < 0x7F and c not in '"\\')[:200]
    return f'Bearer error="{code}", error_description="{safe}"'


@dataclass(frozen=True, slots=True)
class _Checked:
    decision: Decision
    identity: Identity
    host_policy: HostPolicy | None
    revision: str
    # The identity resolved (no token or peer refused): only such checks may be cached.
    resolved: bool
    evidence: Evidence | None = None
    # How the request's JWT was judged (traces show it).
    token_check: TokenCheck | None = None


def _time_claim(claims: Mapping[str, Any] | None, name: str) -> float | None:
    # The verifier already refused a token whose exp/nbf is not a finite number.
    value = claims.get(name) if claims is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _times_hold(cached: Cached, now: float) -> bool:
    """The cached token's exp and nbf, checked as the verifier checks them (with its skew)."""
    if cached.exp is not None and now >= cached.exp + CLOCK_SKEW_SECONDS:
        return False
    return cached.nbf is None or now + CLOCK_SKEW_SECONDS >= cached.nbf


_DEFAULT_HEADERS = HeaderNames()


class Engine:
    """Decides one request. Thread-safe: holds no per-request state.

    `decision_cache`: repeated requests are answered from a `DecisionCache`: True for a default
    one, False for none.
    """

    def __init__(
        self,
        store: PolicyStore,
        resolver: IdentityResolver,
        headers: HeaderNames = _DEFAULT_HEADERS,
        *,
        clock: Callable[[], float] = time.time,
        decision_ids: Callable[[], str] | None = None,
        decision_cache: DecisionCache | bool = True,
        limiter: Limiter | None = None,
    ) -> None:
        self._store = store
        # Offline tools get an in-process counter too, so `authz test` can see a 429.
        self._limiter = limiter or Limiter(LocalCounter(), clock)
        self._resolver = resolver
        self._headers = headers
        self._clock = clock
        self._new_id = decision_ids or new_decision_id
        self.decision_cache: DecisionCache | None = (
            decision_cache
            if isinstance(decision_cache, DecisionCache)
            else (DecisionCache() if decision_cache else None)
        )

    def check(self, request: Request, *, wait: KeyWait = KeyWait.BLOCK) -> Verdict:
        """Decide `request`. Every refusal is a Verdict; raises nothing but programming errors,
        and KeysPending with `wait=KeyWait.DEFER` (the caller awaits the key refetch, then asks
        again with KeyWait.NEVER: how an event loop waits without blocking)."""
        policy_set = self._store.current
        host_policy = policy_set.for_host(request.host)
        cache = self.decision_cache
        if cache is None or host_policy is None or not host_policy.key_plan.cacheable:
            checked = self._decide(policy_set, host_policy, request, wait)
            verdict = self._verdict(request, checked)
            return self._count(self._plan(request, host_policy, checked.identity, verdict), verdict)
        peer = self._resolver.cache_inputs(request, host_policy.authentication)
        if peer is None:
            checked = self._decide(policy_set, host_policy, request, wait)
            verdict = self._verdict(request, checked)
            return self._count(self._plan(request, host_policy, checked.identity, verdict), verdict)
        key = request_key(host_policy.key_plan, request, peer)
        key_sets = self._resolver.key_sets(host_policy.authentication)
        cached = cache.get(policy_set, key)
        if cached is not None:
            if cached.key_sets == key_sets and _times_hold(cached, self._clock()):
                cache.hits += 1
                # The cache holds the rules' verdict and the limits that count it (the cache
                # key names what they read): every request is counted, hit or not.
                return self._count(cached.limits, self._repeat(cached.verdict))
            cache.drop(policy_set, key)
        checked = self._decide(policy_set, host_policy, request, wait)
        verdict = self._verdict(request, checked)
        plan = self._plan(request, host_policy, checked.identity, verdict)
        if checked.resolved:
            user = checked.identity.user
            claims = user.claims if user is not None else None
            cache.put(
                policy_set,
                key,
                Cached(
                    verdict,
                    key_sets,
                    _time_claim(claims, "exp"),
                    _time_claim(claims, "nbf"),
                    entry_size(key, verdict),
                    plan,
                ),
            )
        return self._count(plan, verdict)

    def _plan(
        self,
        request: Request,
        host_policy: HostPolicy | None,
        identity: Identity,
        verdict: Verdict,
    ) -> Plan:
        """The rate limits that count an allowed request, with their counter keys."""
        if not verdict.decision.allowed or host_policy is None or not host_policy.rate_limits:
            return ()
        ctx = RequestContext(request, identity, host_policy.authentication)
        return self._limiter.plan(host_policy.rate_limits, ctx)

    def _count(self, plan: Plan, verdict: Verdict) -> Verdict:
        """The rate-limit stage, after the rules (and the decision cache): the request counts
        under every planned limit and becomes a 429 when one is over."""
        if not plan:
            return verdict
        limited = self._limiter.count(plan, verdict.decision)
        if limited is None:
            return verdict
        if limited.decision.allowed:  # dry-run limits only: "would limit" in the shadow list
            return replace(verdict, decision=limited.decision)
        # The rules' verdict with the 429 in place of its allow: every identity and the token's
        # judgement stay for the log and the span; what only an allow sends upstream goes.
        return replace(
            verdict,
            decision=limited.decision,
            response_headers=limited.headers,
            headers_to_set=(),
            headers_to_remove=(),
            query_parameters_to_remove=(),
        )

    def refuse(self, error: AuthzError, source_ip: str | None = None) -> Verdict:
        """A Verdict for a request that could not even be read (bad path, over a limit).

        `source_ip` (when the caller could read it) goes to the decision log only."""
        return Verdict(
            decision=rejection(error),
            decision_id=self._new_id(),
            policy_revision=self._store.current.revision,
            evidence=Evidence(token="unchecked", source_ip=source_ip) if source_ip else None,
        )

    def _decide(
        self,
        policy_set: PolicySet,
        host_policy: HostPolicy | None,
        request: Request,
        wait: KeyWait,
    ) -> _Checked:
        if host_policy is None:
            return _Checked(no_policy_decision(), ANONYMOUS, None, policy_set.revision, False)
        reads = host_policy.read_claims, host_policy.read_headers
        try:
            identity = self._resolver.resolve(
                request, host_policy.authentication, self._clock(), wait=wait
            )
        except AuthzError as error:
            token, reason = (
                ("rejected", error.reason)
                if isinstance(error, (TokenRejected, ApiKeyRejected))
                else (
                    "unchecked",
                    "",
                )
            )
            evidence = Evidence(token, reason, None, *reads)
            token_check = error.token_check if isinstance(error, TokenRejected) else None
            return _Checked(
                rejection(error),
                ANONYMOUS,
                host_policy,
                policy_set.revision,
                False,
                evidence,
                token_check,
            )
        decision = evaluate(host_policy, request, identity)
        user = identity.user
        evidence = (
            Evidence("verified", "", user.claims, *reads)
            if user is not None
            else Evidence("none", "", None, *reads)
        )
        token_check = user.token_check if user is not None else None
        return _Checked(
            decision, identity, host_policy, policy_set.revision, True, evidence, token_check
        )

    def _repeat(self, verdict: Verdict) -> Verdict:
        """`verdict` again, under a new decision id (also in the decision-id header)."""
        decision_id = self._new_id()
        to_set = verdict.headers_to_set
        if to_set and to_set[0] == (self._headers.decision_id, verdict.decision_id):
            to_set = ((self._headers.decision_id, decision_id), *to_set[1:])
        # A repeated verdict judged no token now: traces say it came from a cache.
        token_check = FROM_CACHE if verdict.token_check is not None else None
        # Built field by field, not with dataclasses.replace: replace re-reads the fields and
        # runs the frozen __init__ through keyword lookups, a third of a cache hit's engine time.
        # tests/unit/test_decision_cache.py checks that every other field is carried over.
        return Verdict(
            verdict.decision,
            decision_id,
            verdict.policy_revision,
            verdict.principal,
            verdict.request_principal,
            verdict.api_key_principal,
            to_set,
            verdict.headers_to_remove,
            verdict.query_parameters_to_remove,
            verdict.evidence,
            verdict.response_headers,
            token_check,
        )

    def _verdict(self, request: Request, checked: _Checked) -> Verdict:
        identity = checked.identity
        workload, user = identity.workload, identity.user
        principal = workload.principal if workload else ""
        request_principal = user.principal if user else ""
        api_key = identity.api_key
        api_key_principal = api_key.principal if api_key else ""
        decision_id = self._new_id()
        edits: _Edits = ((), (), ())
        if checked.decision.allowed:
            assert checked.host_policy is not None  # allowed implies a policy applied
            edits = self._edits(
                request,
                identity,
                checked.host_policy,
                decision_id,
                (principal, request_principal, api_key_principal),
            )
        return Verdict(
            decision=checked.decision,
            decision_id=decision_id,
            policy_revision=checked.revision,
            principal=principal,
            request_principal=request_principal,
            api_key_principal=api_key_principal,
            headers_to_set=edits[0],
            headers_to_remove=edits[1],
            query_parameters_to_remove=edits[2],
            evidence=checked.evidence,
            token_check=checked.token_check,
        )

    def _edits(
        self,
        request: Request,
        identity: Identity,
        host_policy: HostPolicy,
        decision_id: str,
        principals: tuple[str, str, str],
    ) -> _Edits:
        """What an allowed request carries upstream: headers set, headers and query
        parameters removed. `principals`: workload, request and API-key principal."""
        principal, request_principal, api_key_principal = principals
        names = self._headers
        to_set: list[tuple[str, str]] = [(names.decision_id, decision_id)]
        to_remove: list[str] = []
        _set_or_remove(to_set, to_remove, names.principal, principal)
        _set_or_remove(to_set, to_remove, names.request_principal, request_principal)
        _set_or_remove(to_set, to_remove, names.api_key, api_key_principal)

        # Every header any provider of this host may fill from claims is either set from the
        # verified token or removed, so a client can never smuggle its own x-user-id upstream.
        user, token = identity.user, identity.token
        plan = host_policy.token_plans[token.provider] if token is not None else None
        claim_headers: dict[str, str] = {}
        if user is not None and plan is not None:
            for claim, header in plan.claims_to_headers:
                value = _claim_text(user.claims, claim)
                if value is not None:
                    claim_headers[header] = value
        for header in host_policy.claim_headers:
            _set_or_remove(to_set, to_remove, header, claim_headers.get(header, ""))

        query_to_remove: tuple[str, ...] = ()
        cookies: tuple[str, ...] = ()
        if token is not None and plan is not None and plan.strip:
            where = token.found_at
            if where is not None and where.header:
                to_remove.append(where.header)
            elif where is not None and where.query:
                query_to_remove = spellings(request.query, where.query)
            elif where is not None and where.cookie:
                cookies = (where.cookie,)
        key_providers = host_policy.authentication.api_key_providers
        if key_providers:
            query_to_remove, cookies = _remove_api_keys(
                request, key_providers, to_remove, query_to_remove, cookies
            )
        if cookies:
            _strip_cookies(request, frozenset(cookies), to_set, to_remove)
        return tuple(dict(to_set).items()), tuple(dict.fromkeys(to_remove)), query_to_remove


# What an allowed request carries upstream: headers to set, headers and query parameters to
# remove (all empty for a denial).
_Edits = tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]


def _set_or_remove(
    to_set: list[tuple[str, str]], to_remove: list[str], name: str, value: str
) -> None:
    if value:
        to_set.append((name, value))
    else:
        to_remove.append(name)


def _claim_text(claims: object, dotted: str) -> str | None:
    """A claim as header text: strings as they are, lists joined with ',', numbers and booleans
    in JSON spelling. Objects are not sent (a header is no place for them)."""
    value = nested_claim(claims, dotted)
    text = scalar_text(value)
    if text is None:
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            return None
        text = ",".join(str(v) for v in value)
    # A value Envoy would refuse is dropped (the header is removed), by the same check that
    # refuses such an `iss`/`sub` in identity.
    return text if is_header_value(text) else None


def _remove_api_keys(
    request: Request,
    providers: Iterable[ApiKeyProvider],
    to_remove: list[str],
    query_to_remove: tuple[str, ...],
    cookies: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An API key never goes upstream, wherever a provider of the host looks for one, presented
    or not (docs/policy.md, "API keys"): its header is removed, and so are its query parameter
    and cookie when the request has them. Returns the query parameters and cookies to remove."""
    queries, crumbs = list(query_to_remove), list(cookies)
    for provider in providers:
        for where in provider.locations:
            if where.header:
                to_remove.append(where.header.lower())
            elif where.query:
                # Under every name as sent (`api%5Fkey` is `api_key`): Envoy removes raw names.
                queries.extend(spellings(request.query, where.query))
            elif where.cookie and where.cookie not in crumbs:
                crumbs.append(where.cookie)
    return tuple(dict.fromkeys(queries)), tuple(crumbs)


def _strip_cookies(
    request: Request, names: frozenset[str], to_set: list[tuple[str, str]], to_remove: list[str]
) -> None:
    header = request.headers.get("cookie")
    kept = without_cookies(header, names) if header is not None else None
    if kept is None:
        return
    if kept:
        to_set.append(("cookie", kept))
    else:
        to_remove.append("cookie")
