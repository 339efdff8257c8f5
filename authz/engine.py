"""Request -> Verdict: identity, then policy, then what the upstream must be told.

The engine is synchronous and does no I/O: keys are fetched in the background by the
`KeyRegistry`, policies are compiled off the request path, and the current policy set is read
once per check so a reload in flight never mixes two sets.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from authz.config import HeaderNames
from authz.errors import AuthzError, TokenRejected
from authz.identity import IdentityResolver
from authz.model import ANONYMOUS, Decision, Evidence, Identity, Request, Verdict
from authz.policy import HostPolicy, PolicyStore, evaluate, no_policy_decision


class DecisionIds:
    """Unique, cheap decision ids: a random per-process prefix and a counter.

    uuid4 per check costs more than the rest of a cached check; uniqueness across replicas comes
    from the 48-bit random prefix, order within a process from the counter.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


def rejection(error: AuthzError) -> Decision:
    """The decision for a request we refuse before policy: bad input, or a rejected token."""
    challenge = None
    if isinstance(error, TokenRejected):
        challenge = _invalid_token_challenge(str(error))
    return Decision(allowed=False, status=error.status, reason=error.reason, challenge=challenge)


def _invalid_token_challenge(description: str) -> str:
    # RFC 6750 section 3: error_description is a quoted-string of printable ASCII
    # without '"' or '\'.
    safe = "".join(c for c in description if 0x20 <= ord(c) < 0x7F and c not in '"\\')[:200]
    return f'Bearer error="invalid_token", error_description="{safe}"'


@dataclass(frozen=True, slots=True)
class _Checked:
    decision: Decision
    identity: Identity
    host_policy: HostPolicy | None
    revision: str
    evidence: Evidence | None = None


_DEFAULT_HEADERS = HeaderNames()


class Engine:
    """Decides one request. Thread-safe: holds no per-request state."""

    def __init__(
        self,
        store: PolicyStore,
        resolver: IdentityResolver,
        headers: HeaderNames = _DEFAULT_HEADERS,
        *,
        clock: Callable[[], float] = time.time,
        decision_ids: Callable[[], str] | None = None,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._headers = headers
        self._clock = clock
        self._new_id = decision_ids or DecisionIds()

    def check(self, request: Request) -> Verdict:
        """Decide `request`. Raises nothing but programming errors: every refusal is a Verdict."""
        checked = self._decide(request)
        return self._verdict(request, checked)

    def refuse(self, error: AuthzError, source_ip: str | None = None) -> Verdict:
        """A Verdict for a request that could not even be read (bad path, over a limit).

        `source_ip` (when the caller could read it) goes to the decision log only."""
        return Verdict(
            decision=rejection(error),
            decision_id=self._new_id(),
            policy_revision=self._store.current.revision,
            evidence=Evidence(token="unchecked", source_ip=source_ip) if source_ip else None,
        )

    def _decide(self, request: Request) -> _Checked:
        policy_set = self._store.current
        host_policy = policy_set.for_host(request.host)
        if host_policy is None:
            return _Checked(no_policy_decision(), ANONYMOUS, None, policy_set.revision)
        reads = host_policy.read_claims, host_policy.read_headers
        try:
            identity = self._resolver.resolve(request, host_policy.authentication, self._clock())
        except AuthzError as error:
            token, reason = (
                ("rejected", error.reason)
                if isinstance(error, TokenRejected)
                else (
                    "unchecked",
                    "",
                )
            )
            evidence = Evidence(token, reason, None, *reads)
            return _Checked(rejection(error), ANONYMOUS, host_policy, policy_set.revision, evidence)
        decision = evaluate(host_policy, request, identity)
        user = identity.user
        evidence = (
            Evidence("verified", "", user.claims, *reads)
            if user is not None
            else Evidence("none", "", None, *reads)
        )
        return _Checked(decision, identity, host_policy, policy_set.revision, evidence)

    def _verdict(self, request: Request, checked: _Checked) -> Verdict:
        decision, identity = checked.decision, checked.identity
        workload, user = identity.workload, identity.user
        principal = workload.principal if workload else ""
        request_principal = user.principal if user else ""
        decision_id = self._new_id()
        if not decision.allowed:
            return Verdict(
                decision=decision,
                decision_id=decision_id,
                policy_revision=checked.revision,
                principal=principal,
                request_principal=request_principal,
                evidence=checked.evidence,
            )

        names = self._headers
        to_set: list[tuple[str, str]] = [(names.decision_id, decision_id)]
        to_remove: list[str] = []
        _set_or_remove(to_set, to_remove, names.principal, principal)
        _set_or_remove(to_set, to_remove, names.request_principal, request_principal)

        # Every header any provider of this host may fill from claims is either set from the
        # verified token or removed, so a client can never smuggle its own x-user-id upstream.
        claim_headers: dict[str, str] = {}
        if user is not None and user.provider is not None:
            for claim, header in user.provider.claims_to_headers:
                value = _claim_text(user.claims, claim)
                if value is not None:
                    claim_headers[header] = value
        assert checked.host_policy is not None  # allowed implies a policy applied
        for provider in checked.host_policy.authentication.jwt_providers:
            for _, header in provider.claims_to_headers:
                _set_or_remove(to_set, to_remove, header, claim_headers.get(header, ""))

        query_to_remove: tuple[str, ...] = ()
        if user is not None and user.provider is not None and not user.provider.forward:
            where = user.found_at
            if where is not None and where.header:
                to_remove.append(where.header)
            elif where is not None and where.query:
                query_to_remove = (where.query,)
            elif where is not None and where.cookie:
                _strip_cookie(request, where.cookie, to_set, to_remove)

        return Verdict(
            decision=decision,
            decision_id=decision_id,
            policy_revision=checked.revision,
            principal=principal,
            request_principal=request_principal,
            headers_to_set=tuple(dict(to_set).items()),
            headers_to_remove=tuple(dict.fromkeys(to_remove)),
            query_parameters_to_remove=query_to_remove,
            evidence=checked.evidence,
        )


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
    value: object = claims
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        text = ",".join(str(v) for v in value)
    else:
        return None
    # A header value must not carry CR, LF or NUL (RFC 9110 section 5.5).
    return None if any(c in text for c in "\r\n\0") else text


def _strip_cookie(
    request: Request, name: str, to_set: list[tuple[str, str]], to_remove: list[str]
) -> None:
    kept = [
        part.strip()
        for part in request.headers.get("cookie", "").split(";")
        if part.strip() and part.strip().split("=", 1)[0].strip() != name
    ]
    if kept:
        to_set.append(("cookie", "; ".join(kept)))
    else:
        to_remove.append("cookie")
