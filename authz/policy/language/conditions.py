"""The `when` conditions, declared once: each kind (`claim`, `header`) with its operators.

A kind names what it reads from the request and how its subject and values are checked; an
operator carries its description, the shape of its value and the test it compiles to. The
validator (`validate_rules`), the compiler (`rules.compile_condition`) and the JSON Schema walk
`CONDITION_KINDS`, so a new kind (`query`, `context`) or operator is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.claims import MISSING as MISSING
from authz.claims import claim_value as claim_value
from authz.policy.language import kinds
from authz.policy.language import patterns as pat

# (subject name, checked value) -> test over what the kind reads from the request.
Build = Callable[[str, Any], Callable[[Any], bool]]


@dataclass(frozen=True, slots=True)
class Operator:
    """`shape` is "scalar" (one value), "list" (a non-empty list of values), "flag" (a
    boolean) or "capture" (the name of a path capture: the test then gets the pair (what the
    kind reads, the captured segment or None)). Every operator but a flag has a `not_` form,
    which holds when it does not."""

    name: str
    description: str
    shape: str
    build: Build
    # Extra JSON Schema keywords and the matching validator check (a message, or None).
    schema: Mapping[str, Any] | None = None
    reject: Callable[[Any], str | None] | None = None

    @property
    def negatable(self) -> bool:
        return self.shape != "flag"


@dataclass(frozen=True, slots=True)
class ConditionKind:
    """One kind of `when` condition, e.g. `{claim: scope, contains: cart}`."""

    name: str
    description: str  # the condition as a whole
    subject: str  # the `claim:`/`header:` key itself
    value_noun: str  # "a string, number or boolean"
    attribute: str  # what it reads: the `RequestContext` attribute
    operators: tuple[Operator, ...]
    # By default any non-blank subject, and string values.
    subject_pattern: str = kinds.NONBLANK
    check_subject: Callable[[str], Any] | None = None
    value_types: tuple[type, ...] = (str,)
    value_json_types: str | list[str] = "string"
    needs_jwt: bool = False
    needs_api_key: bool = False
    # The `RequestContext` method giving every reading of the subject (`header_readings`):
    # the operators then test one reading each. "": they test `attribute` as a whole.
    readings: str = ""

    @property
    def operator_keys(self) -> tuple[str, ...]:
        """Every operator key, `not_` forms included."""
        return tuple(
            k
            for op in self.operators
            for k in (op.name, f"not_{op.name}")[: 2 if op.negatable else 1]
        )

    def operator(self, key: str) -> tuple[Operator, bool]:
        """The operator of `key` and whether it is the `not_` form."""
        negated = key.startswith("not_")
        name = key[4:] if negated else key
        return next(op for op in self.operators if op.name == name), negated


# --- claims ---------------------------------------------------------------------------------

_MISSING = MISSING
LIST_STRING_CLAIMS = frozenset({"scope", "scp"})


def _as_list(name: str, value: Any) -> list[Any] | None:
    """A list claim, or a space-separated `scope`/`scp` string (RFC 8693 section 4.2)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and name.rsplit(".", 1)[-1] in LIST_STRING_CLAIMS:
        return value.split()
    return None


def _same(a: Any, b: Any) -> bool:
    """Claim equality without Python's coercions: `True == 1` and `"1" != 1` here."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return False


def _claim_present(name: str, value: Any) -> Callable[[Any], bool]:
    want = bool(value)
    return lambda claims: (claim_value(claims, name) is not _MISSING) == want


def _claim_equals(name: str, value: Any) -> Callable[[Any], bool]:
    return lambda claims: _same(claim_value(claims, name), value)


def _claim_contains(name: str, value: Any) -> Callable[[Any], bool]:
    def contains(claims: Mapping[str, Any] | None) -> bool:
        items = _as_list(name, claim_value(claims, name))
        return items is not None and any(_same(i, value) for i in items)

    return contains


def _claim_equals_capture(name: str, _: Any) -> Callable[[Any], bool]:
    def equals(pair: tuple[Mapping[str, Any] | None, str | None]) -> bool:
        claims, captured = pair
        got = claim_value(claims, name)
        # A path segment is text: a string claim, or an integer claim in decimal (`42`).
        if isinstance(got, int) and not isinstance(got, bool):
            got = str(got)
        return captured is not None and isinstance(got, str) and got == captured

    return equals


def _claim_any_of(name: str, value: Any) -> Callable[[Any], bool]:
    def any_of(claims: Mapping[str, Any] | None) -> bool:
        got = claim_value(claims, name)
        items = _as_list(name, got)
        candidates = items if items is not None else [got]
        return any(_same(c, v) for c in candidates for v in value)

    return any_of


# --- keyed values (context extensions, API-key labels): one value per key --------------------


def _key_present(name: str, value: Any) -> Callable[[Any], bool]:
    want = bool(value)
    return lambda values: (name in values) == want


def _key_equals(name: str, value: Any) -> Callable[[Any], bool]:
    return lambda values: values.get(name) == value


def _key_any_of(name: str, value: Any) -> Callable[[Any], bool]:
    options = frozenset(value)
    return lambda values: values.get(name) in options


def _key_equals_capture(name: str, _: Any) -> Callable[[Any], bool]:
    def equals(pair: tuple[Mapping[str, str], str | None]) -> bool:
        values, captured = pair
        return captured is not None and values.get(name) == captured

    return equals


# --- headers and query parameters: a test over ONE reading ----------------------------------
# A header or query parameter can be read several ways (each element of a repeated header, each
# value of a repeated parameter; None when absent): these tests judge one reading, and the
# compiler asks them of every reading, "any" for deny rules and limits, "every" for allow rules
# (docs/policy.md, "One rule for ambiguous requests").


def _reading_present(_: str, value: Any) -> Callable[[Any], bool]:
    want = bool(value)
    return lambda got: (got is not None) == want


def _reading_equals(_: str, value: Any) -> Callable[[Any], bool]:
    return lambda got: got == value


def _reading_prefix(_: str, value: Any) -> Callable[[Any], bool]:
    return lambda got: got is not None and got.startswith(value)


def _reading_any_of(_: str, value: Any) -> Callable[[Any], bool]:
    options = frozenset(value)
    return lambda got: got in options


def _reading_equals_capture(_: str, __: Any) -> Callable[[Any], bool]:
    def equals(pair: tuple[str | None, str | None]) -> bool:
        got, captured = pair
        return captured is not None and got == captured

    return equals


def _empty_prefix(value: Any) -> str | None:
    return "an empty prefix matches everything; use `present: true`" if value == "" else None


_PRESENT = "True: the value is there; false: it is not."
_CAPTURE = (
    "The value equals the path segment the rule's matching path captured as `{name}` "
    "(decoded); the name must be bound by every path of the rule's `to`."
)


@dataclass(frozen=True, slots=True)
class _Tests:
    """What the operators every kind has compile to, for one family of values: a claim, one
    reading of a header or query parameter, a keyed value (context extension, API-key label)."""

    equals: Build
    any_of: Build
    present: Build
    equals_capture: Build


_CLAIM_TESTS = _Tests(_claim_equals, _claim_any_of, _claim_present, _claim_equals_capture)
_READING_TESTS = _Tests(_reading_equals, _reading_any_of, _reading_present, _reading_equals_capture)
_KEY_TESTS = _Tests(_key_equals, _key_any_of, _key_present, _key_equals_capture)


def _operators(
    noun: str,
    tests: _Tests,
    *own: Operator,
    any_of: str = "",
    capture: bool = True,
) -> tuple[Operator, ...]:
    """The operators of a kind on `noun` ("header"): `equals`, the kind's `own` ones, `any_of`
    (described by `any_of` when given), `present` and, with `capture`, `equals_capture`."""
    shared = (
        Operator("equals", f"The {noun} equals this.", "scalar", tests.equals),
        *own,
        Operator("any_of", any_of or f"The {noun} is one of these.", "list", tests.any_of),
        Operator("present", _PRESENT, "flag", tests.present),
    )
    if not capture:
        return shared
    return (*shared, Operator("equals_capture", _CAPTURE, "capture", tests.equals_capture))


CLAIM = ConditionKind(
    name="claim",
    description="A condition on a claim of the verified JWT.",
    subject="A claim of the verified JWT, dotted for nested (`realm_access.roles`).",
    value_types=(str, int, float, bool),
    value_noun="a claim value is a string, number or boolean",
    value_json_types=["string", "number", "boolean"],
    attribute="claims",
    operators=_operators(
        "claim",
        _CLAIM_TESTS,
        Operator(
            "contains",
            "A list claim contains this value; a space-separated `scope`/`scp` string counts "
            "as a list.",
            "scalar",
            _claim_contains,
        ),
        any_of="The claim (or one of its items) is one of these.",
    ),
    needs_jwt=True,
)

HEADER = ConditionKind(
    name="header",
    description="A condition on a request header: each comma-separated element (a header sent "
    "twice arrives joined with `,`) is read under the rule for ambiguous requests.",
    subject="A request header (compared lower-case).",
    subject_pattern=kinds.HEADER_PATTERN,
    check_subject=pat.check_header_name,
    value_noun="a header value is a string",
    attribute="headers",
    operators=_operators(
        "header",
        _READING_TESTS,
        Operator(
            "prefix",
            "The header starts with this.",
            "scalar",
            _reading_prefix,
            schema={"minLength": 1},
            reject=_empty_prefix,
        ),
    ),
    readings="header_readings",
)

QUERY = ConditionKind(
    name="query",
    description="A condition on a query parameter of the original path (name and values "
    "percent-decoded; a repeated parameter, or one under several spellings, is read under the "
    "rule for ambiguous requests: a deny holds when any value does, an allow when every does).",
    subject="A query parameter name (decoded).",
    value_noun="a query value is a string",
    attribute="query",
    operators=_operators("parameter", _READING_TESTS),
    readings="query_readings",
)

CONTEXT = ConditionKind(
    name="context",
    description="A condition on Envoy's per-route `context_extensions` (set with "
    "ExtAuthzPerRoute.check_settings; see `authz envoy-config --route-context`).",
    subject="A context_extensions key.",
    value_noun="a context value is a string",
    attribute="context",
    operators=_operators("context value", _KEY_TESTS, capture=False),
)

API_KEY_LABEL = ConditionKind(
    name="api_key_label",
    description="A condition on a label of the presented API key (from its key file).",
    subject="A label name.",
    value_noun="a label value is a string",
    attribute="api_key_labels",
    operators=_operators("label", _KEY_TESTS),
    needs_api_key=True,
)

CONDITION_KINDS: tuple[ConditionKind, ...] = (CLAIM, HEADER, QUERY, CONTEXT, API_KEY_LABEL)
