"""A described request ("GET /api/orders as the frontend") -> the service's decision and a trace.

`authz test`, `authz explain`, coverage and `authz replay` start from a `Scenario`: the request
as an author writes it, with credentials given as what a test can know (the claims of a token
whose signature passed, an introspection answer, an API key by `<provider>/<id>`). The request is
read by the gRPC door's own reader (`authz.wire.given`), the given credentials are placed where
the host's providers look for them and judged by the service's own identity sources
(`authz.authoring.given`), and the decision, rate limits included, is the real `Engine`'s: a tool
can never disagree with the service about the outcome. The per-rule trace comes from each
compiled rule's `mismatch`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from authz.authoring.given import given_credentials
from authz.config import Settings
from authz.engine import Engine, rejection
from authz.errors import AuthzError
from authz.limits import Count, Counter, Limiter, LocalCounter, counter_key
from authz.model import ANONYMOUS, Decision, Identity, Request
from authz.policy import HostPolicy, PolicySet, PolicyStore, evaluate, no_policy_decision
from authz.policy.decide.context import RequestContext
from authz.request.hosts import normalize_host
from authz.wire.given import given_request

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_SETTINGS = Settings()


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
    # The answer of an introspection endpoint for the request's opaque token (`active` and
    # the members), standing in for a real endpoint.
    introspection: Mapping[str, Any] | None = None
    # The client certificate's SHA-256 thumbprint (base64url), for certificate-bound tokens.
    certificate_thumbprint: str | None = None
    # Which introspection provider's location carries the opaque token (default: the first).
    introspected_by: str | None = None


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
    exactly as the service does (the wire's reading, host lookup, the identity sources)."""
    checked = _checked(policy_set, scenario)
    if isinstance(checked, Prepared):
        return checked
    host_policy, request, given = checked
    notes = list(given.notes)
    try:
        identity = given.resolver.resolve(request, host_policy.authentication, now)
    except AuthzError as error:
        notes.append(f"the service would refuse this request: {error}")
        prepared = Prepared(request.host, request.path, host_policy, request, ANONYMOUS, None)
        return replace(prepared, refused=rejection(error), notes=tuple(notes))
    _identity_notes(scenario, host_policy, identity, notes)
    return Prepared(request.host, request.path, host_policy, request, identity, None, tuple(notes))


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
    """Decide `scenario` against `policy_set` with the service's engine, with a per-rule trace.

    `now` is the time the claims' `exp`/`nbf` are judged at (default: the current time).
    `limiter` holds the counters of the host's rate limits (default: a fresh in-process
    counter, so one request is the first of its window); `authz test` passes one per case to
    send a request several times.
    """
    revision = policy_set.revision
    at = time.time() if now is None else now
    p = prepare(policy_set, scenario, at)
    if p.host_policy is None or p.request is None:
        assert p.refused is not None
        return Explanation(p.refused, revision, p.host, p.path, notes=p.notes)
    checked = _checked(policy_set, scenario)
    assert not isinstance(checked, Prepared)
    host_policy, request, given = checked
    counts: dict[str, Count] = {}
    counting = _Recording(limiter.counter if limiter is not None else LocalCounter(), counts)
    ctx = RequestContext(request, p.identity, host_policy.authentication)
    for limit in host_policy.rate_limits:
        value = limit.key.read(ctx)
        if value is not None:
            counting.names[counter_key(limit.name, value)] = limit.name
    engine = Engine(
        PolicyStore(policy_set),
        given.resolver,
        clock=lambda: at,
        decision_cache=False,
        limiter=Limiter(counting, clock=lambda: at),
    )
    verdict = engine.check(request)
    base = Explanation(
        decision=verdict.decision,
        revision=revision,
        host=p.host,
        path=p.path,
        files=host_policy.files,
        principal=verdict.principal or None,
        request_principal=verdict.request_principal or None,
        api_key_principal=verdict.api_key_principal or None,
        notes=p.notes,
    )
    if p.refused is not None:
        return base
    rules = _trace(host_policy, request, p.identity, decide(p))
    limits = _limit_trace(host_policy, ctx, verdict.decision, counts)
    return replace(base, rules=rules, limits=limits)


@dataclass(frozen=True, slots=True)
class _Given:
    """A scenario's credentials placed, and the resolver with the given seams."""

    resolver: Any
    notes: tuple[str, ...]


def _checked(
    policy_set: PolicySet, scenario: Scenario
) -> Prepared | tuple[HostPolicy, Request, _Given]:
    """The scenario read as the wire reads it, with its credentials placed; a Prepared when the
    service would decide before identity (a refused request, no policy for the host)."""
    host = normalize_host(scenario.host) or scenario.host
    host_policy = policy_set.for_host(host) if normalize_host(scenario.host) else None
    auth = host_policy.authentication if host_policy is not None else None
    placed = None
    headers: Mapping[str, str] = scenario.headers
    path = scenario.path
    if auth is not None:
        placed = given_credentials(
            _SETTINGS,
            auth,
            path=scenario.path,
            headers=scenario.headers,
            claims=scenario.claims,
            introspection=scenario.introspection,
            api_key=scenario.api_key,
            certificate_thumbprint=scenario.certificate_thumbprint,
            introspected_by=scenario.introspected_by,
        )
        headers, path = placed.headers, placed.path
    try:
        request = given_request(
            method=scenario.method,
            path=path,
            host=scenario.host,
            headers=headers,
            source_ip=scenario.source_ip,
            port=scenario.port,
            principal=scenario.principal or "",
            context=scenario.context,
        )
    except AuthzError as error:
        return Prepared(host, None, None, None, ANONYMOUS, rejection(error), (str(error),))
    if host_policy is None or placed is None:
        note = f"no policy file applies to host {request.host!r}"
        return Prepared(
            request.host, request.path, None, None, ANONYMOUS, no_policy_decision(), (note,)
        )
    return host_policy, request, _Given(placed.resolver, placed.notes)


def _identity_notes(
    scenario: Scenario, host_policy: HostPolicy, identity: Identity, notes: list[str]
) -> None:
    auth = host_policy.authentication
    if scenario.principal and identity.workload is None:
        domains = ", ".join(sorted(auth.trust_domains or ())) or "none"
        notes.append(
            f"principal {scenario.principal!r} is not authenticated for this host "
            f"(trust domains: {domains})"
        )


def _limit_trace(
    host_policy: HostPolicy,
    ctx: RequestContext,
    decision: Decision,
    counts: Mapping[str, Count],
) -> tuple[LimitTrace, ...]:
    """A trace of every rate limit of the host, from what the engine's limiter counted."""
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
    return tuple(out)


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
