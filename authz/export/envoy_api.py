"""The Envoy API messages the export builds, as light checked objects.

envoy-data-plane's classes are pydantic models: importing the ones the export needs costs about
0.3 s, and each of the ~10,000 messages a 1,000-rule set makes is a pydantic validation. These
classes check the same things when built, against the table of Envoy's fields in
envoy_schema.py (generated from envoy-data-plane; tests/unit/export/test_envoy_api.py
regenerates it and fails when it differs): every field named exists on the message, its value
has the field's type (the message, the enum, a string that is valid UTF-8, an integer in the
field's range), and no oneof holds two fields. A message is never changed once built (the
cached constructors in matchers.py share them). render.to_json writes them as protobuf JSON.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from typing import Any, ClassVar

from authz.export.envoy_schema import MESSAGES

# The Python module (under envoy_data_plane) of each namespace below, as envoy_schema.py names it.
_PACKAGES = {
    "m": "envoy.type.matcher.v3",
    "rbac": "envoy.config.rbac.v3",
    "route": "envoy.config.route.v3",
    "core": "envoy.config.core.v3",
    "jwt": "envoy.extensions.filters.http.jwt_authn.v3",
    "hm": "envoy.extensions.filters.http.header_mutation.v3",
    "hrbac": "envoy.extensions.filters.http.rbac.v3",
    "xa": "envoy.extensions.filters.http.ext_authz.v3",
    "http_type": "envoy.type.v3",
    "mutation": "envoy.config.common.mutation_rules.v3",
    "protobuf": "google.protobuf",
}

_Check = Callable[[Any], Any]  # the value as stored, or ValueError


class Message:
    """One Envoy message: `rbac.Policy(permissions=[...])`; an unset field reads as its default."""

    KEY: ClassVar[str]  # e.g. "envoy.config.rbac.v3.Policy"
    # field -> (check, oneof group or "", may be None); the JSON order: (field, name, default)
    _checks: ClassVar[dict[str, tuple[_Check, str, bool]] | None] = None
    _order: ClassVar[tuple[tuple[str, str, Any], ...]] = ()

    def __init_subclass__(cls) -> None:
        namespace = cls.__qualname__.partition(".")[0]
        cls.KEY = f"{_PACKAGES[namespace]}.{cls.__name__}"

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        checks = cls._checks if cls._checks is not None else cls._load()
        groups: set[str] = set()
        for name, value in values.items():
            found = checks.get(name)
            if found is None:
                raise TypeError(f"{cls.KEY} has no field {name!r}")
            check, group, nullable = found
            if value is None:
                if not nullable:  # a list, a map or a proto3 scalar is never unset
                    raise ValueError(f"{cls.KEY}.{name}: None for a field that is never unset")
                continue
            try:
                values[name] = check(value)
            except ValueError as error:
                raise ValueError(f"{cls.KEY}.{name}: {error}") from None
            if group:
                if group in groups:
                    raise ValueError(f"{cls.KEY}: oneof {group} has more than one field set")
                groups.add(group)
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for fields never set
        for field, _, default in type(self).order():
            if field == name:
                return None if default is None else type(default)(default)
        raise AttributeError(f"{type(self).KEY} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).KEY} is never changed once built")

    @classmethod
    def order(cls) -> tuple[tuple[str, str, Any], ...]:
        """(field, JSON name, default) in the order envoy-data-plane declares them."""
        if cls._checks is None:
            cls._load()
        return cls._order

    @classmethod
    def _load(cls) -> dict[str, tuple[_Check, str, bool]]:
        fields = MESSAGES[cls.KEY]
        cls._order = tuple((name, name.rstrip("_"), _default(kind)) for name, kind, _ in fields)
        cls._checks = {
            name: (_check(kind), group, _default(kind) is None) for name, kind, group in fields
        }
        return cls._checks


# --- the checks, by the kinds envoy_schema.py writes ---------------------------------------------

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}
_ZEROS: dict[str, Any] = {"string": "", "bool": False, "bytes": b"", "double": 0.0, "float": 0.0}


def _default(kind: str) -> Any:
    if kind.startswith("[]"):
        return []
    if kind.startswith("{}"):
        return {}
    if kind.startswith(("?", "msg:", "duration", "timestamp")):
        return None
    if kind.startswith("enum:") or kind in _INT_RANGES:
        return 0
    return _ZEROS[kind]


def _check(kind: str) -> _Check:
    if kind.startswith("[]"):
        each = _check(kind[2:])

        def repeated(v: Any) -> list[Any]:
            if not isinstance(v, (list, tuple)):
                raise ValueError(f"a list expected, not {type(v).__name__}")
            return [each(x) for x in v]

        return repeated
    if kind.startswith("{}"):
        value = _check(kind[2:])

        def mapping(v: Any) -> dict[str, Any]:
            if not isinstance(v, dict) or not all(type(k) is str for k in v):
                raise ValueError("a map of strings expected")
            return {_string(k): value(x) for k, x in v.items()}

        return mapping
    kind = kind.removeprefix("?")
    if kind.startswith("msg:"):
        return _message(kind[4:])
    if kind.startswith("enum:"):
        return _enum(kind[5:])
    if kind in _INT_RANGES:
        return _integer(*_INT_RANGES[kind])
    return _SCALARS[kind]


def _message(key: str) -> _Check:
    def check(v: Any) -> Any:
        if getattr(type(v), "KEY", None) != key:
            raise ValueError(f"a {key} expected, not {type(v).__name__}")
        return v

    return check


def _enum(key: str) -> _Check:
    def check(v: Any) -> Any:
        if ENUM_KEYS.get(type(v)) != key:
            raise ValueError(f"a {key} expected, not {v!r}")
        return v

    return check


def _integer(low: int, high: int) -> _Check:
    def check(v: Any) -> int:
        if type(v) is not int or not low <= v <= high:
            raise ValueError(f"an integer in [{low}, {high}] expected, not {v!r}")
        return v

    return check


def _string(v: Any) -> str:
    if type(v) is not str:
        raise ValueError(f"a string expected, not {type(v).__name__}")
    v.encode("utf-8")  # a lone surrogate is no UTF-8: UnicodeEncodeError is a ValueError
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ValueError(f"a boolean expected, not {v!r}")
    return v


def _double(v: Any) -> float:
    if type(v) not in (int, float):
        raise ValueError(f"a number expected, not {v!r}")
    return float(v)


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise ValueError(f"bytes expected, not {type(v).__name__}")
    return v


def _duration(v: Any) -> datetime.timedelta:
    if type(v) is not datetime.timedelta:
        raise ValueError(f"a timedelta expected, not {type(v).__name__}")
    return v


_SCALARS: dict[str, _Check] = {
    "string": _string,
    "bool": _bool,
    "double": _double,
    "float": _double,
    "bytes": _bytes,
    "duration": _duration,
}


# --- the messages and enums the export builds, by Envoy package ----------------------------------
# Each namespace stands for the envoy-data-plane module the export imported under that name.


class m:
    class StringMatcher(Message): ...

    class RegexMatcher(Message): ...

    class PathMatcher(Message): ...

    class ValueMatcher(Message): ...

    class DoubleMatcher(Message): ...

    class ListMatcher(Message): ...

    class MetadataMatcher(Message): ...

    class MetadataMatcherPathSegment(Message): ...


class rbac:
    class Permission(Message): ...

    class PermissionSet(Message): ...

    class Policy(Message): ...

    class Principal(Message): ...

    class PrincipalAuthenticated(Message): ...

    class PrincipalSet(Message): ...

    class Rbac(Message): ...

    class SourcedMetadata(Message): ...

    class RbacAction(enum.IntEnum):
        ALLOW = 0
        DENY = 1
        LOG = 2

    class MetadataSource(enum.IntEnum):
        DYNAMIC = 0
        ROUTE = 1


class route:
    class HeaderMatcher(Message): ...

    class RouteMatch(Message): ...


class core:
    class CidrRange(Message): ...

    class DataSource(Message): ...

    class GrpcService(Message): ...

    class GrpcServiceEnvoyGrpc(Message): ...

    class HttpUri(Message): ...

    class ApiVersion(enum.IntEnum):
        AUTO = 0
        V2 = 1
        V3 = 2


class jwt:
    class JwksAsyncFetch(Message): ...

    class JwtAuthentication(Message): ...

    class JwtClaimToHeader(Message): ...

    class JwtHeader(Message): ...

    class JwtProvider(Message): ...

    class JwtRequirement(Message): ...

    class JwtRequirementOrList(Message): ...

    class RemoteJwks(Message): ...

    class RequirementRule(Message): ...


class hm:
    class HeaderMutation(Message): ...

    class Mutations(Message): ...


class hrbac:
    class Rbac(Message): ...


class xa:
    class ExtAuthz(Message): ...


class http_type:
    class HttpStatus(Message): ...

    class StatusCode(enum.IntEnum):  # the codes the export uses
        ServiceUnavailable = 503


class mutation:
    class HeaderMutation(Message): ...


class protobuf:
    class Empty(Message): ...


Empty = protobuf.Empty

# Each enum -> its full name, as envoy_schema.py names it (`enum:KEY`).
ENUM_KEYS: dict[type, str] = {
    e: f"{_PACKAGES[e.__qualname__.partition('.')[0]]}.{e.__name__}"
    for e in (rbac.RbacAction, rbac.MetadataSource, core.ApiVersion, http_type.StatusCode)
}
