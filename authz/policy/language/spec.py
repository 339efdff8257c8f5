"""The validated policy spec: what `authz.policy.language.schema` makes of a file (docs/policy.md).

Plain frozen dataclasses with no imports from the rest of the package, so `authz.model` and the
identity layer can name the authentication types without pulling in the policy compiler.
`EntrySpec` holds the keys declared in `authz.policy.language.fields`, so a new field needs nothing
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TokenLocation:
    """Where a JWT is looked for: exactly one of header, query or cookie is set."""

    header: str | None = None
    prefix: str = ""
    query: str | None = None
    cookie: str | None = None


# Where a provider looks for its token when the policy does not say (RFC 6750 section 2.1).
BEARER = TokenLocation(header="authorization", prefix="Bearer ")


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One `authentication.jwt` entry of a policy file, validated.

    Exactly one key source is set: `jwks_uri`, `jwks_file` (absolute path), `jwks_json` (the
    inline JWKS, serialized) or `discovery`. `algorithms` is empty for "the asymmetric default".
    """

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str | None = None
    jwks_file: str | None = None
    jwks_json: str | None = None
    discovery: bool = False
    locations: tuple[TokenLocation, ...] = (BEARER,)
    # As Envoy's jwt_authn (forward) and Istio's forwardOriginalToken: the token stays here.
    forward: bool = False
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    algorithms: tuple[str, ...] = ()
    # RFC 8705: the token's cnf["x5t#S256"] must be the client certificate's thumbprint.
    certificate_bound: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ApiKey:
    """One entry of a key file: an id, the SHA-256 of the key (hex) and labels. Never the key."""

    id: str
    sha256: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, eq=False)
class ApiKeyProvider:
    """One `authentication.api_keys` entry, bound to its parsed key file.

    `keys` maps the hex SHA-256 of a key to its entry: a presented key is hashed first and the
    hash looked up, so the lookup's timing depends only on the hash (docs/policy.md, "API keys").
    Compared by identity: provider names are unique across a set.
    """

    name: str
    locations: tuple[TokenLocation, ...]
    keys_file: str
    keys: Mapping[str, ApiKey] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Authentication:
    """The authentication in force for one host: the union of its applying files.

    `trust_domains` is None when no applying file restricts them.
    """

    trust_domains: frozenset[str] | None = None
    jwt_providers: tuple[JwtProvider, ...] = ()
    api_key_providers: tuple[ApiKeyProvider, ...] = ()
    # Istio's trustDomainAliases: also in `trust_domains` (so their peers are authenticated);
    # principal patterns are expanded to every trust domain of the set when compiled.
    trust_domain_aliases: frozenset[str] = frozenset()
    introspection_providers: tuple[IntrospectionProvider, ...] = ()

    @property
    def token_providers(self) -> tuple[JwtProvider | IntrospectionProvider, ...]:
        """The bearer-token providers, JWT first: `TokenUse.provider` indexes this."""
        return (*self.jwt_providers, *self.introspection_providers)


@dataclass(frozen=True, slots=True)
class IntrospectionProvider:
    """One `authentication.introspection` entry (RFC 7662), validated.

    The client secret is never here: `secret_file` (absolute path) or `secret_env` names where
    the service reads it. `issuer` is the `iss` of a response that has none. `tokens` is
    "opaque" (only tokens that are not JWTs, when the host has JWT providers) or "all".
    """

    name: str
    endpoint: str
    issuer: str
    client_id: str
    secret_file: str | None = None
    secret_env: str | None = None
    locations: tuple[TokenLocation, ...] = (BEARER,)
    tokens: str = "opaque"
    audiences: tuple[str, ...] = ()
    timeout: float = 2.0
    cache_ttl: float = 60.0
    inactive_ttl: float = 5.0
    cache_entries: int = 10_000
    cache_bytes: int = 16 * 1024 * 1024
    forward: bool = False
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    certificate_bound: bool = False


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """One `from` or `to` entry (or an entry of a role): the checked value of each key given.

    Keys are the YAML keys declared in `authz.policy.language.fields` (`paths`, `not_principals`); a
    flag is stored under its name as True (`authenticated: true`) or False (`not_authenticated`).
    Lists are never empty; a key not given reads as None. Kept sorted, so equal entries compare
    equal whatever order their keys were written in.
    """

    line: int
    values: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, line: int, **values: Any) -> EntrySpec:
        return cls(line, tuple(sorted((k, v) for k, v in values.items() if v is not None)))

    def get(self, key: str) -> Any:
        return next((v for k, v in self.values if k == key), None)

    def replace(self, **changes: Any) -> EntrySpec:
        """The entry with `changes` (None removes a key)."""
        return EntrySpec.of(self.line, **(dict(self.values) | changes))


# The two sections differ only in which declarations their keys come from.
FromSpec = EntrySpec
ToSpec = EntrySpec


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """One `when` condition: `kind` is "claim" or "header", `op` one of the operators.

    `negated` is set for the `not_` form of the operator (`not_equals`, ...). `value` is a
    scalar for equals/prefix, a tuple for any_of, a bool for present.
    """

    line: int
    kind: str
    name: str
    op: str
    value: Any
    negated: bool = False


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    file: str
    line: int
    action: str
    dry_run: bool = False
    from_: tuple[FromSpec, ...] | None = None
    to: tuple[ToSpec, ...] | None = None
    when: tuple[ConditionSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """One `rate_limits` entry (authz.limits compiles it); `from_`/`to`/`when` as in rules,
    `per` is "second", "minute" or "hour"."""

    name: str
    file: str
    line: int
    # The key as checked at load (`header:x-tenant`, canonical: `authz.limits.keys.parse_key`
    # reads it back); the compiler turns it into a `LimitKey`, the spec holds plain values only.
    key: str
    limit: int
    per: str
    dry_run: bool = False
    from_: tuple[FromSpec, ...] | None = None
    to: tuple[ToSpec, ...] | None = None
    when: tuple[ConditionSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    file: str
    line: int
    entries: tuple[ToSpec, ...]


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One validated policy file. `hosts` is None for a file that applies to every host."""

    file: str
    hosts: tuple[str, ...] | None = None
    trust_domains: tuple[str, ...] | None = None
    jwt_providers: tuple[JwtProvider, ...] = ()
    roles: tuple[RoleSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    # Bound to their key files by the loader; `api_key_lines` are their lines, for problems.
    api_key_providers: tuple[ApiKeyProvider, ...] = ()
    api_key_lines: tuple[int, ...] = ()
    trust_domain_aliases: tuple[str, ...] = ()
    # Local files the policy refers to (a `jwks_file`), as (absolute path, line of the key):
    # validation reads no file, so the loader checks these and puts them in the revision.
    local_files: tuple[tuple[str, int], ...] = ()
    rate_limits: tuple[RateLimitSpec, ...] = ()
    introspection_providers: tuple[IntrospectionProvider, ...] = ()
    introspection_lines: tuple[int, ...] = ()
