"""A described request ("GET /api/orders as the frontend") -> the policy's decision and a trace.

`authz test` and `authz explain` both start from a `Scenario`: the request as an author writes
it, with the identity already decided (a workload principal, the claims of a token that passed
verification). `explain_scenario` builds the `Request` and `Identity` the engine would see and
asks the real evaluator for the decision, so a tool can never disagree with the service about
the outcome; the per-rule trace comes from each compiled rule's `mismatch`.

What a scenario cannot show is the signature: claims stand for a token whose signature passed.
Everything the service checks beyond the signature is checked by the service's own code
(`authz.identity.jwt.check_claims`: issuer, audience, `exp`/`nbf`, `sub`), so claims the
service would refuse are refused here with the same 401 and reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from authz.engine import rejection
from authz.errors import ApiKeyRejected, InvalidHost, InvalidMethod, InvalidPath, TokenRejected
from authz.identity.jwt import check_claims
from authz.identity.spiffe import workload_for
from authz.limits import Count, Counter, Limiter, LocalCounter, counter_key
from authz.model import ANONYMOUS, ApiKeyUser, Decision, EndUser, Identity, Request
from authz.policy import HostPolicy, PolicySet, evaluate, no_policy_decision
from authz.policy.context import RequestContext
from authz.policy.patterns import check_method, normalize_host
from authz.request.paths import normalize_path

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Scenario:
    """A request as a policy author describes it. `claims` stands for a verified JWT."""

    method: str
    path: str
    host: str
    principal: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    claims: Mapping[str, Any] | None = None
    source_ip: str | None = None
    port: int | None = None
    # `<provider>/<id>` of a key the set knows (key files hold only hashes), and Envoy's
    # per-route context_extensions.
    api_key: str | None = None
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """What one rule of the host did with the request.

    `failed` is the first part that did not match (`to: paths`, `from: principals`,
    `when: claim scope contains 'cart'`), None when the rule matched. `effect` is one of
    `deny`, `allow`, `would deny`, `would allow` (dry_run), `audit`, or `no match`.
    """

    name: str
    file: str
    line: int
    action: str
    dry_run: bool
    matched: bool
    failed: str | None
    effect: str
    decides: bool = False
    # What the rule's matching path captured (`{tenant}`), for a rule that compares with one.
    captures: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class LimitTrace:
    """One rate limit of the host: whether it matched, its key, and its count in the window
    after this request (`state`: "3 of 100 per minute", "over: 101 of 100 per minute")."""

    name: str
    file: str
    line: int
    matched: bool
    failed: str | None
    key: str
    key_present: bool
    state: str
    decides: bool = False


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision for a scenario, and why."""

    decision: Decision
    revision: str
    host: str
    path: str | None  # normalized; None when the path was refused
    files: tuple[str, ...] = ()
    principal: str | None = None
    request_principal: str | None = None
    api_key_principal: str | None = None
    rules: tuple[RuleTrace, ...] = ()
    notes: tuple[str, ...] = ()
    limits: tuple[LimitTrace, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A scenario as the evaluator sees it. `refused` is set when the service would decide
    before policy (a refused path or token, no policy for the host); then only `notes` and
    whatever could be built are meaningful."""

    host: str
    path: str | None
    host_policy: HostPolicy | None
    request: Request | None
    identity: Identity
    refused: Decision | None
    notes: tuple[str, ...] = ()


def prepare(policy_set: PolicySet, scenario: Scenario, now: float) -> Prepared:
    """Build the `Request` and `Identity` the service would build for `scenario`.

    Shared by `explain_scenario`, coverage and `authz replay`, so they all judge requests
    exactly as the service does (same path normalization, host lookup, trust-domain and claim
    checks)."""
    host = normalize_host(scenario.host)
    if host is None:
        bad_host = InvalidHost(f"{scenario.host!r} is not a valid host")
        return Prepared(
            scenario.host, None, None, None, ANONYMOUS, rejection(bad_host), (str(bad_host),)
        )
    try:
        check_method(scenario.method)  # refused as the service refuses it, never upper-cased
    except ValueError as error:
        bad_method = InvalidMethod(f"the request method {error}")
        return Prepared(
            host, None, None, None, ANONYMOUS, rejection(bad_method), (str(bad_method),)
        )
    try:
        path, query = normalize_path(scenario.path)
    except InvalidPath as error:
        return Prepared(host, None, None, None, ANONYMOUS, rejection(error), (str(error),))
    host_policy = policy_set.for_host(host)
    if host_policy is None:
        note = f"no policy file applies to host {host!r}"
        return Prepared(host, path, None, None, ANONYMOUS, no_policy_decision(), (note,))
    request = Request(
        method=scenario.method,
        path=path,
        host=host,
        raw_path=scenario.path,
        query=query,
        headers=MappingProxyType({k.lower(): v for k, v in scenario.headers.items()}),
        source_ip=scenario.source_ip,
        destination_port=scenario.port,
        peer_principal=scenario.principal or "",
        context=MappingProxyType(dict(scenario.context)),
    )
    notes: list[str] = []
    identity, refused = _identity(scenario, host_policy, now, notes)
    return Prepared(host, path, host_policy, request, identity, refused, tuple(notes))


def decide(prepared: Prepared) -> Decision:
    """The decision for a prepared scenario: the refusal, or the real evaluator's answer."""
    if prepared.refused is not None or prepared.request is None:
        assert prepared.refused is not None
        return prepared.refused
    return evaluate(prepared.host_policy, prepared.request, prepared.identity)


def explain_scenario(
    policy_set: PolicySet,
    scenario: Scenario,
    now: float | None = None,
    limiter: Limiter | None = None,
) -> Explanation:
    """Decide `scenario` against `policy_set` as the service would, with a per-rule trace.

    `now` is the time the claims' `exp`/`nbf` are judged at (default: the current time).
    `limiter` counts the host's rate limits when the rules allow (default: a fresh in-process
    counter, so one request is the first of its window); `authz test` passes one per case to
    send a request several times.
    """
    revision = policy_set.revision
    now = time.time() if now is None else now
    p = prepare(policy_set, scenario, now)
    if p.host_policy is None or p.request is None:
        assert p.refused is not None
        return Explanation(p.refused, revision, p.host, p.path, notes=p.notes)
    identity = p.identity
    workload = identity.workload.principal if identity.workload is not None else None
    user = identity.user.principal if identity.user is not None else None
    key = identity.api_key.principal if identity.api_key is not None else None
    base = Explanation(
        decision=decide(p),
        revision=revision,
        host=p.host,
        path=p.path,
        files=p.host_policy.files,
        principal=workload,
        request_principal=user,
        api_key_principal=key,
        notes=p.notes,
    )
    if p.refused is not None:
        return base
    rules = _trace(p.host_policy, p.request, identity, base.decision)
    decision, limits = _limits(p.host_policy, p.request, identity, base.decision, limiter, now)
    return replace(base, decision=decision, rules=rules, limits=limits)


def _limits(
    host_policy: HostPolicy,
    request: Request,
    identity: Identity,
    decision: Decision,
    limiter: Limiter | None,
    now: float,
) -> tuple[Decision, tuple[LimitTrace, ...]]:
    """The service's rate-limit stage (only after an allow), and a trace of every limit."""
    if not host_policy.rate_limits:
        return decision, ()
    ctx = RequestContext(request, identity, host_policy.authentication)
    counts: dict[str, Count] = {}
    if decision.allowed:
        counting = _Recording(limiter.counter if limiter is not None else LocalCounter(), counts)
        for limit in host_policy.rate_limits:
            value = limit.key.read(ctx)
            if value is not None:
                counting.names[counter_key(limit.name, value)] = limit.name
        limited = Limiter(counting, clock=lambda: now).apply(host_policy.rate_limits, ctx, decision)
        if limited is not None:
            decision = limited.decision
    out: list[LimitTrace] = []
    for limit in host_policy.rate_limits:
        failed = limit.matcher.mismatch(ctx)
        value = limit.key.read(ctx)
        count = counts.get(limit.name)
        window = f"{limit.limit} per {limit.per_name}"
        if count is not None:
            used = limit.limit - count.remaining if count.allowed else limit.limit + 1
            state = f"{used} of {window}" if count.allowed else f"over: {window}"
        elif not decision.allowed and decision.status != 429:
            state = f"not counted (the rules deny); {window}"
        elif failed is None and value is None:
            state = f"not counted (no {limit.key}); {window}"
        else:
            state = window
        out.append(
            LimitTrace(
                name=limit.name,
                file=limit.file,
                line=limit.line,
                matched=failed is None,
                failed=failed,
                key=str(limit.key),
                key_present=value is not None,
                state=state,
                decides=decision.status == 429 and decision.reason == limit.name,
            )
        )
    return decision, tuple(out)


class _Recording:
    """A counter that remembers the count each limit got (`names`: counter key -> limit)."""

    def __init__(self, inner: Counter, counts: dict[str, Count]) -> None:
        self._inner = inner
        self._counts = counts
        self.names: dict[bytes, str] = {}

    def take(self, key: bytes, limit: int, per: int, now: float) -> Count:
        count = self._inner.take(key, limit, per, now)
        self._counts[self.names.get(key, key.hex())] = count
        return count

    def status(self) -> dict[str, str | float]:
        return self._inner.status()

    def close(self) -> None:
        self._inner.close()


def _identity(
    scenario: Scenario, host_policy: HostPolicy, now: float, notes: list[str]
) -> tuple[Identity, Decision | None]:
    """The identity the service would resolve; a Decision when it would refuse the request."""
    auth = host_policy.authentication
    workload = None
    if scenario.principal:
        workload = workload_for(scenario.principal, auth.trust_domains)
        if workload is None:
            domains = ", ".join(sorted(auth.trust_domains or ())) or "none"
            notes.append(
                f"principal {scenario.principal!r} is not authenticated for this host "
                f"(trust domains: {domains})"
            )
    user: EndUser | None = None
    if scenario.claims is not None:
        issuer = scenario.claims.get("iss")
        provider = next((p for p in auth.jwt_providers if p.issuer == issuer), None)
        if not auth.jwt_providers:
            notes.append(
                "the host has no JWT provider: the token is ignored, the request is anonymous"
            )
        elif provider is None:
            error = TokenRejected(
                "the token's issuer is not accepted here", reason="jwt_unknown_issuer"
            )
            notes.append(f"no JWT provider of this host has issuer {issuer!r}")
            return Identity(workload=workload), rejection(error)
        else:
            try:
                user = check_claims(scenario.claims, provider, now)
            except TokenRejected as error:
                notes.append(f"the service would refuse this token: {error}")
                return Identity(workload=workload), rejection(error)
    api_key: ApiKeyUser | None = None
    if scenario.api_key is not None:
        name, _, key_id = scenario.api_key.partition("/")
        keys = next((k for k in auth.api_key_providers if k.name == name), None)
        key = next((k for k in keys.keys.values() if k.id == key_id), None) if keys else None
        if keys is None or key is None:
            where = f"provider {name!r}" if keys else "no API-key provider of this host"
            notes.append(f"API key {scenario.api_key!r} is unknown to {where}")
            rejected = ApiKeyRejected("the API key is not known", realm=name)
            return Identity(workload=workload, user=user), rejection(rejected)
        api_key = ApiKeyUser(keys.name, key, found_at=keys.locations[0])
    return Identity(workload=workload, user=user, api_key=api_key), None


def _trace(
    host_policy: HostPolicy, request: Request, identity: Identity, decision: Decision
) -> tuple[RuleTrace, ...]:
    ctx = RequestContext(request, identity, host_policy.authentication)
    out: list[RuleTrace] = []
    for rule in host_policy.rules:
        failed = rule.mismatch(ctx)
        matched = failed is None
        if not matched:
            effect = "no match"
        elif rule.action == "audit":
            effect = "audit"
        elif rule.dry_run:
            effect = f"would {rule.action}"
        else:
            effect = rule.action
        out.append(
            RuleTrace(
                name=rule.name,
                file=rule.file,
                line=rule.line,
                action=rule.action,
                dry_run=rule.dry_run,
                matched=matched,
                failed=failed,
                effect=effect,
                decides=matched and rule.enforced and decision.rule == rule.name,
                captures=rule.captures(ctx),
            )
        )
    return tuple(out)
