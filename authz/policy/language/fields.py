"""Each field of a `from` or `to` entry, declared once (docs/policy.md, "Rules").

A declaration says everything the code needs about a field: its name, its value kind (read and
checked with FILE:LINE problems, and its JSON Schema), whether it has a `not_` form, the
description authors see (JSON Schema hover, `authz explain`), the compile step to the predicate
the evaluator runs. The validator
(`validate_rules`), the compiler (`rules`), the JSON Schema (`authz.authoring.json_schema`) and
lint all walk these tuples, and the spec (`EntrySpec`) stores values by key: adding a field is
adding one entry (tests/unit/policy/language/test_field_declarations.py runs it through every part).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from authz.policy.language import kinds
from authz.policy.language import patterns as pat


class RoleEntries(Protocol):
    """What compiling `role` needs: the named roles' entries, compiled, as one test over the
    whole request context."""

    def __call__(self, names: Sequence[str]) -> Callable[[Any], bool]: ...


# A test over the value of the field's request attribute (`EntryField.reads`).
Test = Callable[[Any], bool]
# A field's checked value (and the roles, for `role`) -> the test the evaluator runs.
Compile = Callable[[Any, RoleEntries], Test]


@dataclass(frozen=True, slots=True)
class EntryField:
    """One field of a `from` or `to` entry; see the module docstring."""

    name: str
    kind: kinds.ValueKind
    description: str
    # The `RequestContext` attribute the test reads; "" for the whole context (`role`).
    reads: str
    compile: Compile
    negatable: bool = True
    # The field can only match a request with a verified JWT (for the 401 challenge).
    needs_jwt: bool = False
    # The field can only match a request with a known API key (for the ApiKey challenge).
    needs_api_key: bool = False
    # False for fields a role's own entries may not use (`role` inside a role).
    in_roles: bool = True
    # The `not_` form's description when "matches when none of these match" does not fit.
    not_description: str = ""
    # The `RequestContext` attribute holding every reading of `reads` (`paths`: the path as
    # sent and with `;params` cut), when a request can be read several ways: the compiler then
    # asks the test of each reading (docs/policy.md, "One rule for ambiguous requests").
    readings: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The YAML keys of the field: its name and, when negatable, `not_<name>`."""
        return (self.name, f"not_{self.name}") if self.negatable else (self.name,)


class _Matcher(Protocol):
    def matches(self, value: Any) -> bool: ...


def _by(build: Callable[[Any], _Matcher]) -> Compile:
    """Values -> a matcher built once; its bound `matches` is the test (no extra frame)."""
    return lambda values, _: build(values).matches


def _one_of(values: Any, _: RoleEntries) -> Test:
    """Membership, in C; an absent (None) attribute is never among the values."""
    return frozenset(values).__contains__


def _ip_blocks(values: Sequence[str]) -> _Matcher:
    return pat.ip_blocks(pat.parse_ip_block(v) for v in values)


def _methods(values: Any, _: RoleEntries) -> Test:
    """Membership; `*` is any method, as in Istio (`not_methods: ["*"]` then matches none)."""
    return bool if "*" in values else frozenset(values).__contains__


def _truth(_: bool, __: RoleEntries) -> Test:
    return bool


def _role(names: Sequence[str], roles: RoleEntries) -> Test:
    return roles(names)


_STAR = "`*` alone matches any value; a leading or trailing `*` matches a suffix or prefix."

FROM_FIELDS: tuple[EntryField, ...] = (
    EntryField(
        "principals",
        kinds.STAR,
        "The mTLS workload principal: `spiffe://td/ns/x/sa/y` or Istio's short form "
        f"`td/ns/x/sa/y`. `*` = any authenticated workload. {_STAR}",
        "principal",
        _by(pat.principal_patterns),
    ),
    EntryField(
        "namespaces",
        kinds.STAR,
        f"The SPIFFE namespace of the workload principal. {_STAR}",
        "namespace",
        _by(pat.string_patterns),
    ),
    EntryField(
        "request_principals",
        kinds.STAR,
        f"`<iss>/<sub>` of the verified JWT. {_STAR}",
        "request_principal",
        _by(pat.string_patterns),
        needs_jwt=True,
    ),
    EntryField(
        "issuers",
        kinds.TEXT,
        "`iss` of the verified JWT.",
        "issuer",
        _one_of,
        needs_jwt=True,
    ),
    EntryField(
        "ip_blocks",
        kinds.IP_BLOCKS,
        "The source address: single IPs or CIDRs, IPv4 and IPv6 (host bits zero).",
        "ip",
        _by(_ip_blocks),
    ),
    EntryField(
        "api_keys",
        kinds.STAR,
        f"The API-key principal `<provider>/<id>` of a known key. {_STAR}",
        "api_key_principal",
        _by(pat.string_patterns),
        needs_api_key=True,
    ),
    EntryField(
        "authenticated",
        kinds.FLAG,
        "Any workload, end-user or API-key identity at all (only `true` is allowed).",
        "authenticated",
        _truth,
        not_description="No workload, end-user or API-key identity (only `true` is allowed).",
    ),
)

TO_FIELDS: tuple[EntryField, ...] = (
    EntryField(
        "methods",
        kinds.METHODS,
        "The HTTP method, upper case; gRPC calls are `POST`. `*` is any method (Istio).",
        "method",
        _methods,
    ),
    EntryField(
        "paths",
        kinds.PATHS,
        "The normalized path. `/exact/path`; `{*}` is exactly one segment; `{name}` is one "
        "segment captured as `name` (for `equals_capture`); `{**}` is zero or more segments "
        "(last segment only); Istio's `prefix*`, `*suffix` and `*`. gRPC methods are paths: "
        "`/pkg.Service/Method`.",
        "path",
        _by(pat.path_patterns),
        readings="paths",
    ),
    EntryField(
        "hosts",
        kinds.HOSTS,
        "The request host (`:authority`, lower-cased, without port): exact or `*.suffix`.",
        "host",
        _by(pat.host_patterns),
    ),
    EntryField(
        "ports",
        kinds.PORTS,
        "The destination port (`attributes.destination.address`).",
        "port",
        _one_of,
    ),
    EntryField(
        "role",
        kinds.NAMES,
        "A role (or several) from `roles`: matches when any of its entries does.",
        "",
        _role,
        in_roles=False,
        not_description="Matches when none of these roles' entries do.",
    ),
)

ROLE_FIELDS = tuple(f for f in TO_FIELDS if f.in_roles)


def not_description(field: EntryField) -> str:
    """What the `not_` form of `field` says to authors."""
    return field.not_description or f"Matches when none of these match. ({field.description})"


def describe(section: str, key: str) -> str | None:
    """The description of `key` (`paths`, `not_principals`) in `from` or `to`, for explain."""
    for field in FROM_FIELDS if section == "from" else TO_FIELDS:
        if key == field.name:
            return field.description
        if key == f"not_{field.name}" and field.negatable:
            return not_description(field)
    return None
