"""Validated files -> one compiled, indexed `PolicySet` (pure; built off the request path).

Whole-set checks live here: rule names are unique across the set, role names too, and every
role a rule names exists. Then the indexes a check needs:

* files by host: an exact-name dict, a dict of `*.suffix` patterns keyed by the suffix (a host
  looks up each of its label suffixes: a few dict lookups, whatever the number of files), and
  the host-less files;
* within each file, rules by (method, first path segment), so a check looks at the few rules
  that could match, not at all of them.

`HostPolicy` objects are memoized by the *set of applying files*, not by host name: that set
is determined by the policy (at most one per exact host, per suffix pattern, plus host-less),
so the memo stays bounded however many host names clients invent.
"""

from __future__ import annotations

import difflib
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.errors import PolicyError, Problem
from authz.limits.keys import parse_key
from authz.policy.decide.rules import CompiledRule, Reads, compile_rule
from authz.policy.language.aliases import expand_aliases
from authz.policy.language.patterns import request_first_segment
from authz.policy.language.schema import FileSpec, ToSpec
from authz.policy.language.spec import (
    ApiKeyProvider,
    Authentication,
    IntrospectionProvider,
    JwtProvider,
    RateLimitSpec,
    RuleSpec,
    TokenLocation,
)

if TYPE_CHECKING:  # authz.limits reads policy contexts: no import cycle at run time
    from authz.limits.stage import CompiledLimit

IndexKey = tuple[str | None, str | None]


class RuleIndex:
    """One file's rules by (method, first path segment); None is the "any" bucket."""

    __slots__ = ("_buckets",)

    def __init__(self, rules: Iterable[CompiledRule]):
        buckets: dict[IndexKey, list[CompiledRule]] = defaultdict(list)
        for rule in rules:
            for key in rule.index_keys:
                buckets[key].append(rule)
        self._buckets: dict[IndexKey, tuple[CompiledRule, ...]] = {
            k: tuple(v) for k, v in buckets.items()
        }

    def collect(self, method: str, segment: str, into: dict[int, CompiledRule]) -> None:
        """Add every rule that could match (method, first segment) to `into`, by index."""
        get = self._buckets.get
        for key in ((method, segment), (method, None), (None, segment), (None, None)):
            for rule in get(key, ()):
                into[rule.index] = rule


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What a check of one host reads of a request besides method, path, host and the peer:
    the header values its rules and token locations read, and whether the query string (a
    token location), the destination port (`ports`) or the source IP (`ip_blocks`) matter.
    A decision cache key made of exactly these tells apart every two requests the host's
    policy could decide differently. `cacheable` is False when a rule reads something the key
    cannot name (`Reads.opaque`): that host's checks are never cached."""

    headers: tuple[str, ...]
    query: bool
    port: bool
    source_ip: bool
    cacheable: bool = True
    context: bool = False  # the route's context_extensions (`when: context`)


def key_plan(
    rules: Iterable[CompiledRule],
    authentication: Authentication,
    limits: Iterable[CompiledLimit] = (),
) -> KeyPlan:
    reads = Reads()
    for rule in rules:
        reads = reads | rule.reads
    # A cached allow keeps which rate limits count it and under which keys (the engine counts
    # it again on every hit): the key must name what the limits read too.
    for limit in limits:
        reads = reads | limit.reads
    headers = set(reads.headers)
    query = reads.query
    # Where credentials are looked for: the identity (and the API-key principal header of an
    # allow) depends on what they hold.
    locations: list[TokenLocation] = [
        *(loc for provider in authentication.token_providers for loc in provider.locations),
        *(loc for provider in authentication.api_key_providers for loc in provider.locations),
    ]
    for location in locations:
        if location.header is not None:
            headers.add(location.header.lower())
        elif location.cookie is not None:
            headers.add("cookie")
        elif location.query is not None:
            query = True
    return KeyPlan(
        tuple(sorted(headers)),
        query,
        reads.port,
        reads.source_ip,
        not reads.opaque,
        reads.context,
    )


@dataclass(frozen=True, slots=True)
class TokenPlan:
    """What an allowed request gets from a token one provider of the host accepted: headers
    set from its claims, and with `strip` (the provider's forward: false) the token removed
    from wherever it was found."""

    claims_to_headers: tuple[tuple[str, str], ...]
    strip: bool


class HostPolicy:
    """The rules and authentication of the files that apply to one host."""

    __slots__ = (
        "_candidates",
        "_indexes",
        "_rules",
        "authentication",
        "claim_headers",
        "files",
        "key_plan",
        "rate_limits",
        "read_claims",
        "read_headers",
        "token_plans",
    )

    def __init__(self, files: Sequence[_CompiledFile]):
        self.files: tuple[str, ...] = tuple(f.spec.file for f in files)
        self.authentication = merge_authentication(f.spec for f in files)
        self._indexes = tuple(f.index for f in files)
        self._rules = tuple(r for f in files for r in f.rules)
        # Applied after an allow, in set order (authz.limits.stage).
        self.rate_limits: tuple[CompiledLimit, ...] = tuple(x for f in files for x in f.limits)
        # What decisions on this host can depend on beyond method, path, host and peer: the
        # decision log records these (and only these) so a replay can re-decide exactly.
        conditions = [c for r in self._rules for c in r.spec.when]
        self.read_claims = frozenset(c.name for c in conditions if c.kind == "claim")
        self.read_headers = frozenset(c.name.lower() for c in conditions if c.kind == "header")
        self.key_plan = key_plan(self._rules, self.authentication, self.rate_limits)
        self._candidates: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        # Every header any provider of this host fills from claims, once each, in order: an
        # allowed request gets each of them set from its token or removed.
        self.claim_headers: tuple[str, ...] = tuple(
            dict.fromkeys(
                header
                for provider in self.authentication.token_providers
                for _, header in provider.claims_to_headers
            )
        )
        # One per bearer-token provider, in `authentication.token_providers` order
        # (`TokenUse.provider`): the JWT providers, then the introspection providers.
        self.token_plans: tuple[TokenPlan, ...] = tuple(
            TokenPlan(p.claims_to_headers, strip=not p.forward)
            for p in self.authentication.token_providers
        )

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """All rules of the applying files, in set order."""
        return self._rules

    def candidates(self, method: str, path: str) -> tuple[CompiledRule, ...]:
        """The rules that could match this method and normalized path, in set order.

        A superset of the matching rules (the index only rules out what cannot match);
        exposed so tests can check that the index is used. Memoised per (method, first
        segment), bounded: both are the client's to choose.
        """
        segment = request_first_segment(path)
        key = (method, segment)
        found = self._candidates.get(key)
        if found is not None:
            return found
        into: dict[int, CompiledRule] = {}
        for index in self._indexes:
            index.collect(method, segment, into)
        found = tuple(into[i] for i in sorted(into))
        if len(method) + len(segment) <= 256:
            if len(self._candidates) >= _CANDIDATES_LIMIT:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def candidates_of(self, method: str, paths: tuple[str, ...]) -> tuple[CompiledRule, ...]:
        """`candidates` for every reading of the path (`RequestContext.paths`), in set order."""
        if len(paths) == 1:
            return self.candidates(method, paths[0])
        into = {rule.index: rule for path in paths for rule in self.candidates(method, path)}
        return tuple(into[i] for i in sorted(into))


_CANDIDATES_LIMIT = 4096


def merge_authentication(files: Iterable[FileSpec]) -> Authentication:
    """Trust domains: union of the files' lists and aliases (None when none lists any);
    providers (JWT and API key): all, without duplicates, in file order."""
    domains: set[str] | None = None
    aliases: set[str] = set()
    providers: dict[JwtProvider, None] = {}
    api_keys: dict[ApiKeyProvider, None] = {}
    introspection: dict[IntrospectionProvider, None] = {}
    for f in files:
        if f.trust_domains is not None:
            domains = (domains or set()) | set(f.trust_domains) | set(f.trust_domain_aliases)
            aliases.update(f.trust_domain_aliases)
        providers.update(dict.fromkeys(f.jwt_providers))
        api_keys.update(dict.fromkeys(f.api_key_providers))
        introspection.update(dict.fromkeys(f.introspection_providers))
    return Authentication(
        trust_domains=frozenset(domains) if domains is not None else None,
        jwt_providers=tuple(providers),
        api_key_providers=tuple(api_keys),
        trust_domain_aliases=frozenset(aliases),
        introspection_providers=tuple(introspection),
    )


@dataclass(frozen=True, slots=True, eq=False)
class _CompiledFile:
    spec: FileSpec
    rules: tuple[CompiledRule, ...]
    index: RuleIndex
    limits: tuple[CompiledLimit, ...] = ()


_MEMO_LIMIT = 100_000  # a safety net only: the number of file sets is bounded by the policy
# Host names are the client's to invent: the by-name memo starts over when it reaches this.
_NAME_MEMO_LIMIT = 4096


class PolicySet:
    """A compiled, validated policy set: immutable once built, shared by all threads."""

    def __init__(self, files: Sequence[FileSpec], revision: str):
        """Compile `files` (validated by the schema); raise PolicyError on set-wide problems."""
        files = expand_aliases(sorted(files, key=lambda f: f.file))
        problems, roles = set_problems(files)
        if problems:
            raise PolicyError(problems)
        compiled: list[_CompiledFile] = []
        index = 0
        for f in files:
            rules = []
            for spec in f.rules:
                rules.append(compile_rule(index, spec, roles))
                index += 1
            limits = tuple(compile_limit(spec, roles) for spec in f.rate_limits)
            compiled.append(_CompiledFile(f, tuple(rules), RuleIndex(rules), limits))
        self.revision = revision
        self.files: tuple[FileSpec, ...] = tuple(files)
        self.rules: tuple[CompiledRule, ...] = tuple(r for c in compiled for r in c.rules)
        merged = merge_authentication(files)
        self.jwt_providers: tuple[JwtProvider, ...] = merged.jwt_providers
        # Where API keys are looked for (the decision log never writes those headers).
        self.api_key_providers: tuple[ApiKeyProvider, ...] = merged.api_key_providers
        self.introspection_providers: tuple[IntrospectionProvider, ...] = (
            merged.introspection_providers
        )
        self._compiled = tuple(compiled)
        exact: dict[str, list[int]] = defaultdict(list)
        suffix: dict[str, list[int]] = defaultdict(list)
        hostless: list[int] = []
        for i, f in enumerate(files):
            if f.hosts is None:
                hostless.append(i)
                continue
            for h in f.hosts:
                if h.startswith("*."):
                    suffix[h[2:]].append(i)
                else:
                    exact[h].append(i)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._suffix = {k: tuple(v) for k, v in suffix.items()}
        self._hostless = tuple(hostless)
        self._memo: dict[tuple[int, ...], HostPolicy] = {}
        self._by_name: dict[str, HostPolicy | None] = {}
        self._lock = threading.Lock()

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def for_host(self, host: str) -> HostPolicy | None:
        """The policy for `host` (canonical: `normalize_host`'s result, as in `Request.host`),
        or None when no file applies: the caller then denies with `no_policy_for_host`.

        Memoised by the name as given (bounded), so a busy host costs one dict lookup."""
        try:
            return self._by_name[host]
        except KeyError:
            pass
        policy = self._lookup(host)
        if len(host) > 255:  # longer than any DNS name: answer, but do not keep it
            return policy
        if len(self._by_name) >= _NAME_MEMO_LIMIT:
            self._by_name.clear()
        self._by_name[host] = policy
        return policy

    def _lookup(self, host: str) -> HostPolicy | None:
        ids = set(self._hostless)
        ids.update(self._exact.get(host, ()))
        # "*.example.com" matches one or more labels before "example.com": try every suffix
        # that follows a dot.
        dot = host.find(".")
        while dot >= 0:
            ids.update(self._suffix.get(host[dot + 1 :], ()))
            dot = host.find(".", dot + 1)
        if not ids:
            return None
        key = tuple(sorted(ids))
        policy = self._memo.get(key)
        if policy is None:
            policy = HostPolicy([self._compiled[i] for i in key])
            with self._lock:
                if len(self._memo) < _MEMO_LIMIT:
                    policy = self._memo.setdefault(key, policy)
        return policy


def compile_limit(spec: RateLimitSpec, roles: dict[str, tuple[ToSpec, ...]]) -> CompiledLimit:
    """A `rate_limits` entry, its from/to/when compiled exactly as a rule's."""
    from authz.limits.stage import PERIODS, CompiledLimit

    as_rule = RuleSpec(
        spec.name, spec.file, spec.line, "allow", False, spec.from_, spec.to, spec.when
    )
    # A limit holds under any reading of the request, as a deny rule does: compiled as a rule
    # (to share its matchers), it must not take an allow rule's "every reading".
    matcher = compile_rule(-1, as_rule, roles, any)
    return CompiledLimit(
        spec.name,
        spec.file,
        spec.line,
        matcher,
        parse_key(spec.key),
        spec.limit,
        PERIODS[spec.per],
        spec.dry_run,
    )


def compile_policy_set(files: Sequence[FileSpec], revision: str = "") -> PolicySet:
    """Compile validated files into a `PolicySet`; raise PolicyError on set-wide problems."""
    return PolicySet(files, revision)


def _first_use(
    where: dict[str, tuple[str, int]],
    problems: list[Problem],
    clash: str,
    name: str,
    file: str,
    line: int,
) -> bool:
    """Remember where `name` is first used and return True; on a later use, report both places
    (each message is `clash` followed by the other place) and return False."""
    if name in where:
        first_file, first_line = where[name]
        problems.append(Problem(file, line, f"{clash} {first_file}:{first_line}"))
        problems.append(Problem(first_file, first_line, f"{clash} {file}:{line}"))
        return False
    where[name] = (file, line)
    return True


def set_problems(files: Sequence[FileSpec]) -> tuple[list[Problem], dict[str, tuple[ToSpec, ...]]]:
    """The problems only the whole set shows (a role or rule name defined twice, an undefined
    role, an API-key provider named twice), and the roles by name."""
    problems: list[Problem] = []
    roles = _collect_roles(files, problems)
    _check_rules(files, roles, problems)
    _check_api_key_providers(files, problems)
    _check_introspection_providers(files, problems)
    return problems, roles


def _collect_roles(
    files: Sequence[FileSpec], problems: list[Problem]
) -> dict[str, tuple[ToSpec, ...]]:
    roles: dict[str, tuple[ToSpec, ...]] = {}
    where: dict[str, tuple[str, int]] = {}
    for f in files:
        for role in f.roles:
            if _first_use(
                where,
                problems,
                f"role {role.name!r} is also defined at",
                role.name,
                role.file,
                role.line,
            ):
                roles[role.name] = role.entries
    return roles


def _check_introspection_providers(files: Sequence[FileSpec], problems: list[Problem]) -> None:
    """Two different introspection providers may not share a name: it labels their metrics
    and the readiness detail. (The same provider repeated in several files is one provider.)"""
    seen: dict[str, tuple[IntrospectionProvider, str, int]] = {}
    for f in files:
        lines = f.introspection_lines or (1,) * len(f.introspection_providers)
        for provider, line in zip(f.introspection_providers, lines, strict=False):
            first = seen.setdefault(provider.name, (provider, f.file, line))
            if first[0] != provider:
                problems.append(
                    Problem(
                        f.file,
                        line,
                        f"introspection provider {provider.name!r} is also defined, "
                        f"differently, at {first[1]}:{first[2]}",
                    )
                )


def _check_api_key_providers(files: Sequence[FileSpec], problems: list[Problem]) -> None:
    """API-key provider names are unique across the set: a principal `<name>/<id>` must say
    which key file vouched for it."""
    where: dict[str, tuple[str, int]] = {}
    for f in files:
        for provider, line in zip(f.api_key_providers, f.api_key_lines, strict=True):
            _first_use(
                where,
                problems,
                f"api_keys provider {provider.name!r} is also defined at",
                provider.name,
                f.file,
                line,
            )


def _check_rules(
    files: Sequence[FileSpec], roles: dict[str, tuple[ToSpec, ...]], problems: list[Problem]
) -> None:
    where: dict[str, tuple[str, int]] = {}
    for f in files:
        # Rate limits share the rules' names: both are a decision's reason.
        named: list[RuleSpec | RateLimitSpec] = [*f.rules, *f.rate_limits]
        for rule in named:
            _first_use(
                where,
                problems,
                f"rule name {rule.name!r} is also used at",
                rule.name,
                rule.file,
                rule.line,
            )
            for entry in rule.to or ():
                for name in (*(entry.get("role") or ()), *(entry.get("not_role") or ())):
                    if name not in roles:
                        close = difflib.get_close_matches(name, sorted(roles), n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else ""
                        problems.append(
                            Problem(f.file, entry.line, f"undefined role {name!r}{hint}")
                        )
