"""The JSON Schema (draft 2020-12) of one policy file, for editors.

The YAML language server reads it from a modeline (`# yaml-language-server: $schema=...`) and
then completes field names, shows these descriptions on hover and flags mistakes as the author
types. The schema mirrors `authz.policy.schema` (the real validator) as far as JSON Schema can:
structure, field names, types, enumerations, "exactly one of" rules and the simple value
patterns. What it cannot say (paths in normal form, roles that exist, names unique across the
set, CIDR host bits) only `authz validate` checks. A test feeds both the same documents.

The descriptions paraphrase docs/policy.md, the contract with policy authors.
"""

from __future__ import annotations

import json
from typing import Any

from authz.policy.spec import JwtProvider, TokenLocation
from authz.reasons import Reason

SCHEMA_ID = "https://authz.example.dev/schemas/policy.schema.json"

# Kept in step with authz.policy.schema (KNOWN_ALGORITHMS, _NAME); the agreement test fails when
# they drift apart. The reserved names are the reason-code table itself.
_RESERVED = sorted(r.value for r in Reason)
_ALGORITHMS = [
    "ES256", "ES256K", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
    "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
]  # fmt: skip
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# A `*` only as the whole value, its first or its last character, not both.
_STAR_PATTERN = r"^(\*|\*[^*]+|[^*]+\*?)$"
_HOST_PATTERN = (
    r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"  # first label, maybe after "*."
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$"  # then ".label" any number of times
)
METHOD_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Z-]+$"
_HEADER_PATTERN = r"^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_NONBLANK = r"\S"


def _text(description: str, pattern: str = _NONBLANK) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern, "description": description}


def _list(description: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": item, "description": description}


def _with_not(fields: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every field also has a `not_` form that matches when none of its values match."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in fields.items():
        out[name] = schema
        negated = dict(schema)
        negated["description"] = f"Matches when none of these match. ({schema['description']})"
        out[f"not_{name}"] = negated
    return out


def _from_entry() -> dict[str, Any]:
    star = "`*` alone matches any value; a leading or trailing `*` matches a suffix or prefix."
    fields = _with_not(
        {
            "principals": _list(
                "The mTLS workload principal: `spiffe://td/ns/x/sa/y` or Istio's short form "
                f"`td/ns/x/sa/y`. `*` = any authenticated workload. {star}",
                _text("A principal pattern.", _STAR_PATTERN),
            ),
            "namespaces": _list(
                f"The SPIFFE namespace of the workload principal. {star}",
                _text("A namespace pattern.", _STAR_PATTERN),
            ),
            "request_principals": _list(
                f"`<iss>/<sub>` of the verified JWT. {star}",
                _text("A request principal pattern.", _STAR_PATTERN),
            ),
            "issuers": _list("`iss` of the verified JWT.", _text("An issuer.")),
            "ip_blocks": _list(
                "The source address: single IPs or CIDRs, IPv4 and IPv6 (host bits zero).",
                _text("An IP address or CIDR.", r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"),
            ),
        }
    )
    fields["authenticated"] = {
        "const": True,
        "description": "Any workload or end-user identity at all (only `true` is allowed).",
    }
    fields["not_authenticated"] = {
        "const": True,
        "description": "No workload and no end-user identity (only `true` is allowed).",
    }
    return {
        "type": "object",
        "description": (
            "Who may ask. Every field given must match (AND); within a field, any value (OR)."
        ),
        "additionalProperties": False,
        "minProperties": 1,
        "properties": fields,
        "not": {"required": ["authenticated", "not_authenticated"]},
    }


def _to_fields() -> dict[str, dict[str, Any]]:
    return _with_not(
        {
            "methods": _list(
                "The HTTP method, upper case; gRPC calls are `POST`.",
                _text("An HTTP method in upper case.", METHOD_PATTERN),
            ),
            "paths": _list(
                "The normalized path. `/exact/path`; `{*}` is exactly one segment; `{**}` is zero "
                "or more segments (last segment only); Istio's `prefix*`, `*suffix` and `*`. "
                "gRPC methods are paths: `/pkg.Service/Method`.",
                _text("A path pattern, in normal form.", r"^[/*]"),
            ),
            "hosts": _list(
                "The request host (`:authority`, lower-cased, without port): exact or `*.suffix`.",
                _text("A host name or `*.suffix`.", _HOST_PATTERN),
            ),
            "ports": _list(
                "The destination port (`attributes.destination.address`).",
                {
                    "description": "A port number, 1-65535.",
                    "anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": 65535},
                        {"type": "string", "pattern": r"^[0-9]{1,5}$"},
                    ],
                },
            ),
        }
    )


def _to_entry() -> dict[str, Any]:
    role = {
        "description": "A role (or several) from `roles`: matches when any of its entries does.",
        "anyOf": [
            _text("A role name.", _NAME_PATTERN),
            _list("Role names.", _text("A role name.")),
        ],
    }
    fields = _to_fields()
    fields["role"] = role
    fields["not_role"] = dict(role, description="Matches when none of these roles' entries do.")
    return {
        "type": "object",
        "description": (
            "What is asked for. Every field given must match (AND); within a field, any value (OR)."
        ),
        "additionalProperties": False,
        "minProperties": 1,
        "properties": fields,
    }


def _role_entry() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One permission of the role: like a `to` entry, without `role`.",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": _to_fields(),
    }


def _condition(kind: str, ops: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    props: dict[str, Any] = {kind: _text(what)}
    for op, schema in ops.items():
        props[op] = schema
        if op != "present":
            props[f"not_{op}"] = dict(schema, description=f"Holds when `{op}` does not.")
    names = [n for n in props if n != kind]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [kind],
        "properties": props,
        "oneOf": [{"required": [n]} for n in names],
    }


def _when() -> dict[str, Any]:
    claim_value = {
        "type": ["string", "number", "boolean"],
        "description": "A claim value: string, number or boolean.",
    }
    header_value = {"type": "string", "description": "A header value."}
    present = {"type": "boolean", "description": "True: the value is there; false: it is not."}
    claim = _condition(
        "claim",
        {
            "equals": dict(claim_value, description="The claim equals this value."),
            "contains": dict(
                claim_value,
                description="A list claim contains this value; a space-separated "
                "`scope`/`scp` string counts as a list.",
            ),
            "any_of": _list("The claim (or one of its items) is one of these.", claim_value),
            "present": present,
        },
        "A claim of the verified JWT, dotted for nested (`realm_access.roles`).",
    )
    header = _condition(
        "header",
        {
            "equals": dict(header_value, description="The header equals this value."),
            "prefix": {
                "type": "string",
                "minLength": 1,
                "description": "The header starts with this.",
            },
            "any_of": _list("The header is one of these.", header_value),
            "present": present,
        },
        "A request header (compared lower-case).",
    )
    claim["description"] = "A condition on a claim of the verified JWT."
    header["description"] = "A condition on a request header."
    header["properties"]["header"]["pattern"] = _HEADER_PATTERN
    return {
        "description": (
            "A condition that must hold: names one `claim` or `header` and one operator."
        ),
        "oneOf": [claim, header],
    }


def _rule() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A rule matches when `from` (any entry), `to` (any entry) and every "
        "`when` condition hold. Deny rules win over allow rules; no match is a deny.",
        "additionalProperties": False,
        "required": ["name", "action"],
        "properties": {
            "name": {
                "type": "string",
                "pattern": _NAME_PATTERN,
                "not": {"enum": _RESERVED},
                "description": "Unique across the whole set; shows in logs and metrics as the "
                "decision's reason. Letters, digits, `-`, `_` and `.`.",
            },
            "action": {
                "enum": ["allow", "deny", "audit"],
                "description": "allow | deny | audit. `audit` rules are logged when they match "
                "and never change the decision.",
            },
            "dry_run": {
                "type": "boolean",
                "default": False,
                "description": 'Evaluated and logged ("would allow"), never enforced.',
            },
            "from": _list(
                "Omitted: anyone. Otherwise at least one entry must match.",
                {"$ref": "#/$defs/from"},
            ),
            "to": _list(
                "Omitted: any request. Otherwise at least one entry must match.",
                {"$ref": "#/$defs/to"},
            ),
            "when": _list("Every condition must hold.", {"$ref": "#/$defs/when"}),
        },
        # dry_run has no meaning on an audit rule.
        "if": {"properties": {"action": {"const": "audit"}}, "required": ["action"]},
        "then": {"properties": {"dry_run": {"const": False}}},
    }


def _token_location() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Where the token is looked for: one of header (with an optional "
        "prefix), query or cookie.",
        "additionalProperties": False,
        "properties": {
            "header": _text("A request header name.", _HEADER_PATTERN),
            "prefix": {"type": "string", "description": 'Cut before the token, e.g. "Bearer ".'},
            "query": _text("A query parameter name."),
            "cookie": _text("A cookie name."),
        },
        "oneOf": [
            {"required": ["header"]},
            {"required": ["query"], "not": {"required": ["prefix"]}},
            {"required": ["cookie"], "not": {"required": ["prefix"]}},
        ],
    }


# The defaults of a provider, declared once in the model.
_DEFAULTS = JwtProvider(issuer="")


def _location_default(location: TokenLocation) -> dict[str, str]:
    fields = {
        "header": location.header,
        "prefix": location.prefix,
        "query": location.query,
        "cookie": location.cookie,
    }
    return {k: v for k, v in fields.items() if v}


def _provider() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A JWT issuer whose tokens are verified for the file's hosts. Exactly one "
        "key source: jwks_uri, jwks_file, jwks or discovery: true.",
        "additionalProperties": False,
        "required": ["issuer"],
        "properties": {
            "issuer": _text("The token's `iss` must equal this."),
            "audiences": _list(
                "The token's `aud` must contain one of these.", _text("An audience.")
            ),
            "jwks_uri": _text(
                "Where the issuer's JWKS is fetched (refreshed in the background).",
                r"^https?://[^/\s]+",
            ),
            "jwks_file": _text("A JWKS file, relative to the policy file's directory."),
            "jwks": {
                "description": (
                    "An inline JWKS: a mapping with a non-empty `keys` list (or its JSON text)."
                ),
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "minItems": 1}},
                    },
                    {"type": "string"},
                ],
            },
            "discovery": {
                "type": "boolean",
                "default": False,
                "description": (
                    "true: find the JWKS through the issuer's OpenID discovery document."
                ),
            },
            "from": {
                **_list(
                    "Where the token is looked for; default: `Authorization: Bearer`.",
                    {"$ref": "#/$defs/token_location"},
                ),
                "default": [_location_default(loc) for loc in _DEFAULTS.locations],
            },
            "forward": {
                "type": "boolean",
                "default": _DEFAULTS.forward,
                "description": "true: the token also goes upstream. false (the default, as in "
                "Envoy's jwt_authn and Istio): its header, query parameter or cookie is removed "
                "before the request goes upstream.",
            },
            "claims_to_headers": {
                "type": "object",
                "description": "Claim -> request header sent upstream (set from the verified "
                "token, removed otherwise).",
                "additionalProperties": _text("A header name.", _HEADER_PATTERN),
            },
            "algorithms": _list(
                (
                    "Accepted signing algorithms; default: the asymmetric ones. `none` is never "
                    "accepted."
                ),
                {"enum": _ALGORITHMS},
            ),
        },
        "oneOf": [
            {"required": ["jwks_uri"]},
            {"required": ["jwks_file"]},
            {"required": ["jwks"]},
            {
                "required": ["discovery"],
                "properties": {
                    "discovery": {"const": True, "description": "Discovery as the key source."}
                },
            },
        ],
    }


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of one policy file, as a plain (JSON-ready) dict."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "authz policy file",
        "description": "One file of an authz policy set. All files of the directory together form "
        "one set; `authz validate` checks what this schema cannot (roles, unique names, path "
        "normal form).",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "hosts": _list(
                "The hosts this file applies to: exact, or `*.suffix` (one or more labels). "
                "Omitted: every host.",
                _text("A host name or `*.suffix`.", _HOST_PATTERN),
            ),
            "authentication": {
                "type": "object",
                "description": "How requests to these hosts are authenticated.",
                "additionalProperties": False,
                "properties": {
                    "mtls": {
                        "type": "object",
                        "description": "Workload identity from the mTLS peer.",
                        "additionalProperties": False,
                        "properties": {
                            "trust_domains": _list(
                                "Peers outside these SPIFFE trust domains are unauthenticated.",
                                _text("A trust domain, like cluster.local.", r"^[^/:\s]+$"),
                            )
                        },
                    },
                    "jwt": _list("End-user identity from JWTs.", {"$ref": "#/$defs/provider"}),
                },
            },
            "roles": {
                "type": "object",
                "description": "Named, reusable permission sets, used as `to: [{role: name}]`.",
                "propertyNames": {"pattern": _NAME_PATTERN},
                "additionalProperties": _list(
                    "The role's entries (any may match).", {"$ref": "#/$defs/role_entry"}
                ),
            },
            "rules": _list(
                "The rules. A deny that matches wins; else an allow that matches; else deny.",
                {"$ref": "#/$defs/rule"},
            ),
        },
        "$defs": {
            "rule": _rule(),
            "from": _from_entry(),
            "to": _to_entry(),
            "role_entry": _role_entry(),
            "when": _when(),
            "provider": _provider(),
            "token_location": _token_location(),
        },
    }


def schema_text() -> str:
    """The schema as written to `docs/policy.schema.json` and printed by `authz schema`."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"
