"""The plain values that flow through the service, left to right.

Envoy's CheckRequest becomes a `Request` (in `authz.wire.inbound`), the identity layer turns it
into an `Identity`, the policy evaluator returns a `Decision`, and the engine wraps that into a
`Verdict` that `authz.wire.outbound` turns back into protobuf. Nothing here knows protobuf, YAML
or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from authz.request.headers import header_readings
from authz.request.paths import path_readings, target_readings
from authz.request.query import parse_query
from authz.token_check import FROM_CACHE as FROM_CACHE
from authz.token_check import TokenCheck as TokenCheck

if TYPE_CHECKING:  # policy-schema types, only named here (spec imports nothing of ours)
    from authz.policy.language.spec import ApiKey, TokenLocation

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# The pseudo-header a request target is in (RFC 9113 section 8.3.1); the doors all fill it.
PATH_HEADER = ":path"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as Envoy saw it, already normalized.

    `path` is the normalized path (see `authz.request.paths.normalize_path`); `raw_path` is Envoy's
    `:path` as received. `host` is canonical (`authz.policy.language.patterns.normalize_host`:
    lower-case, no port, no trailing dot), normalized once by the wire. Header names are lower-case.
    """

    method: str
    path: str
    host: str
    raw_path: str = ""
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    source_ip: str | None = None
    destination_port: int | None = None
    # What Envoy says about the TLS peer: `attributes.source.principal` and the URL-encoded PEM
    # of `attributes.source.certificate` (only with include_peer_certificate: true).
    peer_principal: str = ""
    peer_certificate: str = ""
    # Claims that Envoy's own jwt_authn filter verified, from `metadata_context`, keyed by the
    # filter's payload_in_metadata name. Only used when the operator enables it.
    jwt_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    request_id: str = ""
    # Envoy's `attributes.context_extensions`: set per route (ExtAuthzPerRoute.check_settings),
    # bounded by `Limits` in the wire; read by `when: [{context: key}]` and rate-limit keys.
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    # -- the readers: every fact of the view is read through one of these ----------------------

    @property
    def path_readings(self) -> tuple[str, ...]:
        """The normalized path as sent and, when a segment has a `;param`, with them cut."""
        return path_readings(self.path)

    def header_readings(self, name: str) -> tuple[str | None, ...]:
        """Every comma-separated element of the header `name` (lower-case); `(None,)` if absent.
        `:path` also reads as its normalized target (`target_readings`): Envoy's doors see it
        normalized, forward-auth as sent."""
        value = self.headers.get(name)
        if name != PATH_HEADER or value is None:
            return header_readings(value)
        readings = (r for target in target_readings(value) for r in header_readings(target))
        return tuple(dict.fromkeys(readings))

    def query_params(self) -> Mapping[str, tuple[str, ...]]:
        """The query parameters, names and values decoded, every value of every spelling."""
        return parse_query(self.query)


@dataclass(frozen=True, slots=True)
class Workload:
    """The mTLS workload identity. SPIFFE parts are set only for a SPIFFE principal."""

    principal: str
    trust_domain: str | None = None
    namespace: str | None = None
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class EndUser:
    """A verified JWT. `claims` is the whole verified payload."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]
    # How this check judged the token (None: Envoy's jwt_authn verified it). Not part of equality.
    token_check: TokenCheck | None = field(default=None, compare=False)

    @property
    def principal(self) -> str:
        """Istio's request principal: `<iss>/<sub>`."""
        return f"{self.issuer}/{self.subject}"


@dataclass(frozen=True, slots=True)
class ApiKeyUser:
    """A known API key: the provider that knows it and its entry. Principal `<name>/<id>`."""

    provider: str
    key: ApiKey
    found_at: TokenLocation | None = field(default=None, compare=False)

    @property
    def principal(self) -> str:
        return f"{self.provider}/{self.key.id}"

    @property
    def labels(self) -> Mapping[str, str]:
        return self.key.labels


@dataclass(frozen=True, slots=True)
class TokenUse:
    """Which provider accepted the end user's token, and where the token was: what the engine
    needs to apply that provider's plan (claims_to_headers, forward: false) to an allowed request.

    `provider` indexes the host's `authentication.token_providers` (and
    `HostPolicy.token_plans`): its JWT providers, then its introspection providers.
    `found_at` is None when Envoy's jwt_authn verified the token (nothing here to strip)."""

    provider: int
    found_at: TokenLocation | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    workload: Workload | None = None
    user: EndUser | None = None
    api_key: ApiKeyUser | None = None
    # Set with `user` when this service verified the token. Not part of who the caller is.
    token: TokenUse | None = field(default=None, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.workload is not None or self.user is not None or self.api_key is not None


ANONYMOUS = Identity()


@dataclass(frozen=True, slots=True)
class ShadowMatch:
    """A matching rule that does not change the decision: `audit`, or `dry_run` ("would allow")."""

    rule: str
    action: str
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says. `reason` is a stable code or the deciding rule's name."""

    allowed: bool
    status: int
    reason: str
    rule: str | None = None
    shadow: tuple[ShadowMatch, ...] = ()
    # The RFC 6750 WWW-Authenticate value for a 401.
    challenge: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a decision depended on beyond the `Request`, for the decision log and replay.

    `token` is `none` (no token, or the host has no JWT provider), `verified`, `rejected`
    (`token_reason` is the jwt_* code) or `unchecked` (the peer was refused first). `claims` is
    the whole verified payload, by reference: the log keeps only `read_claims` of it.
    `read_claims`/`read_headers` are what the host's `when` conditions read (compiled once per
    host, see `HostPolicy`). `source_ip` is set for a request refused before it could be read.
    """

    token: str = "none"
    token_reason: str = ""
    claims: Mapping[str, Any] | None = None
    read_claims: frozenset[str] = frozenset()
    read_headers: frozenset[str] = frozenset()
    source_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision with everything Envoy must be told about it."""

    decision: Decision
    decision_id: str
    policy_revision: str = ""
    principal: str = ""
    request_principal: str = ""
    api_key_principal: str = ""
    # Headers for the upstream (allow only), always sent with append=false.
    headers_to_set: tuple[tuple[str, str], ...] = ()
    # Headers removed on the way upstream (allow only): identity headers we did not set, and a
    # token whose provider says forward: false.
    headers_to_remove: tuple[str, ...] = ()
    # A token found in a query parameter whose provider says forward: false (allow only).
    query_parameters_to_remove: tuple[str, ...] = ()
    # For the decision log only (never sent to Envoy).
    evidence: Evidence | None = None
    # Headers for the client with a deny (a 429's Retry-After and RateLimit headers).
    response_headers: tuple[tuple[str, str], ...] = ()
    # How the request's JWT was judged, when this service judged one (traces show it).
    token_check: TokenCheck | None = None
