"""The keys of each mapping of a policy file outside `from`/`to`/`when`, declared once.

The validator takes each section's known keys (unknown-field errors with did-you-mean) and its
required keys from here, and `authz schema` writes each section from the same declaration; the
rule-level constraints JSON Schema can say (`oneOf` key sources, no `dry_run` on audit rules)
sit next to the keys they constrain, and the validator checks the same in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.limits.keys import KINDS as LIMIT_KEY_KINDS
from authz.limits.stage import PERIODS
from authz.policy.language.kinds import (
    HEADER_PATTERN,
    HOST_PATTERN,
    NAME_PATTERN,
    Schema,
    listed,
    text,
)
from authz.policy.language.spec import JwtProvider, TokenLocation
from authz.reasons import CODES

# A rate limit's key kinds and windows are declared in authz.limits; the schema spells them.
LIMIT_KEY_PATTERN = (
    r"^(principal|request_principal|api_key|source_ip|"
    r"header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|claim:\S+|context:\S+)$"
)
MAX_LIMIT = 10**9  # bounds the counters, and catches a typo such as 1e12

ACTIONS = ("allow", "deny", "audit")

# Reason codes the service itself uses: a rule with one of these names would be
# indistinguishable from them in the decision log and metrics.
RESERVED_NAMES = CODES

# RFC 7518 section 3.1 plus EdDSA (RFC 8037) and ES256K (RFC 8812). "none" is never accepted.
KNOWN_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
     "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping of the policy file. `what` names it in messages (`a jwt provider`)."""

    what: str
    description: str
    keys: tuple[Key, ...]
    constraints: Schema = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(k.name for k in self.keys)

    def json_schema(self) -> Schema:
        out: Schema = {
            "type": "object",
            "description": self.description,
            "additionalProperties": False,
        }
        required = [k.name for k in self.keys if k.required]
        if required:
            out["required"] = required
        out["properties"] = {k.name: k.schema for k in self.keys}
        return out | self.constraints


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a section: its JSON Schema (with its description) and whether it is required."""

    name: str
    schema: Schema
    required: bool = False


def _ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def _name(description: str) -> Key:
    """The `name` of a rule or a rate limit: the reason code of its decisions."""
    schema: Schema = {
        "type": "string",
        "pattern": NAME_PATTERN,
        "not": {"enum": sorted(RESERVED_NAMES)},
        "description": description,
    }
    return Key("name", schema, required=True)


# A token provider's (jwt, introspection) `certificate_bound`.
CERTIFICATE_BOUND = Key(
    "certificate_bound",
    {
        "type": "boolean",
        "default": False,
        "description": "RFC 8705: the token's cnf x5t#S256 must be the SHA-256 thumbprint of "
        "the client certificate (else 401 token_not_bound).",
    },
)


RULE = Section(
    "a rule",
    "A rule matches when `from` (any entry), `to` (any entry) and every `when` condition hold. "
    "Deny rules win over allow rules; no match is a deny.",
    (
        _name(
            "Unique across the whole set; shows in logs and metrics as the decision's reason. "
            "Letters, digits, `-`, `_` and `.`."
        ),
        Key(
            "action",
            {
                "enum": list(ACTIONS),
                "description": "allow | deny | audit. `audit` rules are logged when they match "
                "and never change the decision.",
            },
            required=True,
        ),
        Key(
            "dry_run",
            {
                "type": "boolean",
                "default": False,
                "description": 'Evaluated and logged ("would allow"), never enforced.',
            },
        ),
        Key(
            "from",
            listed("Omitted: anyone. Otherwise at least one entry must match.", _ref("from")),
        ),
        Key(
            "to",
            listed("Omitted: any request. Otherwise at least one entry must match.", _ref("to")),
        ),
        Key("when", listed("Every condition must hold.", _ref("when"))),
    ),
    # dry_run has no meaning on an audit rule.
    {
        "if": {"properties": {"action": {"const": "audit"}}, "required": ["action"]},
        "then": {"properties": {"dry_run": {"const": False}}},
    },
)

RATE_LIMIT = Section(
    "a rate limit",
    "Counted for requests the rules allowed, under its key; over the limit: 429 with "
    "Retry-After. `from`, `to` and `when` match as in rules.",
    (
        _name(
            "Unique across the whole set, rule names included: the reason of its 429 in logs, "
            "metrics and metadata."
        ),
        Key("from", listed("Omitted: anyone. As in rules.", _ref("from"))),
        Key("to", listed("Omitted: any request. As in rules.", _ref("to"))),
        Key("when", listed("Every condition must hold. As in rules.", _ref("when"))),
        Key(
            "key",
            {
                "type": "string",
                "pattern": LIMIT_KEY_PATTERN,
                "description": "What is counted: " + " | ".join(LIMIT_KEY_KINDS) + ". A "
                "request without it is not counted by this limit.",
            },
            required=True,
        ),
        Key(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "description": "Requests per window and key.",
            },
            required=True,
        ),
        Key(
            "per",
            {"enum": list(PERIODS), "description": "The window: second | minute | hour."},
            required=True,
        ),
        Key(
            "dry_run",
            {
                "type": "boolean",
                "default": False,
                "description": 'Counted and logged as "would limit", never enforced.',
            },
        ),
    ),
)

TOKEN_LOCATION = Section(
    "a token location",
    "Where the token is looked for: one of header (with an optional prefix), query or cookie.",
    (
        Key("header", text("A request header name.", HEADER_PATTERN)),
        Key("prefix", {"type": "string", "description": 'Cut before the token, e.g. "Bearer ".'}),
        Key("query", text("A query parameter name.")),
        Key("cookie", text("A cookie name.")),
    ),
    {
        "oneOf": [
            {"required": ["header"]},
            {"required": ["query"], "not": {"required": ["prefix"]}},
            {"required": ["cookie"], "not": {"required": ["prefix"]}},
        ]
    },
)
TOKEN_KINDS = ("header", "query", "cookie")

# The defaults of a provider, declared once in the spec.
_DEFAULTS = JwtProvider(issuer="")


def _location_default(location: TokenLocation) -> dict[str, str]:
    fields = {
        "header": location.header,
        "prefix": location.prefix,
        "query": location.query,
        "cookie": location.cookie,
    }
    return {k: v for k, v in fields.items() if v}


KEY_SOURCES = ("jwks_uri", "jwks_file", "jwks", "discovery")

PROVIDER = Section(
    "a jwt provider",
    "A JWT issuer whose tokens are verified for the file's hosts. Exactly one key source: "
    "jwks_uri, jwks_file, jwks or discovery: true.",
    (
        Key("issuer", text("The token's `iss` must equal this."), required=True),
        Key(
            "audiences",
            listed("The token's `aud` must contain one of these.", text("An audience.")),
        ),
        Key(
            "jwks_uri",
            text(
                "Where the issuer's JWKS is fetched (refreshed in the background).",
                r"^https?://[^/\s]+",
            ),
        ),
        Key("jwks_file", text("A JWKS file, relative to the policy file's directory.")),
        Key(
            "jwks",
            {
                "description": "An inline JWKS: a mapping with a non-empty `keys` list (or its "
                "JSON text).",
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "minItems": 1}},
                    },
                    {"type": "string"},
                ],
            },
        ),
        Key(
            "discovery",
            {
                "type": "boolean",
                "default": False,
                "description": "true: find the JWKS through the issuer's OpenID discovery "
                "document.",
            },
        ),
        Key(
            "from",
            listed(
                "Where the token is looked for; default: `Authorization: Bearer`.",
                _ref("token_location"),
            )
            | {"default": [_location_default(loc) for loc in _DEFAULTS.locations]},
        ),
        Key(
            "forward",
            {
                "type": "boolean",
                "default": _DEFAULTS.forward,
                "description": "true: the token also goes upstream. false (the default, as in "
                "Envoy's jwt_authn and Istio): its header, query parameter or cookie is removed "
                "before the request goes upstream.",
            },
        ),
        Key(
            "claims_to_headers",
            {
                "type": "object",
                "description": "Claim -> request header sent upstream (set from the verified "
                "token, removed otherwise).",
                "additionalProperties": text("A header name.", HEADER_PATTERN),
            },
        ),
        Key(
            "algorithms",
            listed(
                "Accepted signing algorithms; default: the asymmetric ones. `none` is never "
                "accepted.",
                {"enum": sorted(KNOWN_ALGORITHMS)},
            ),
        ),
        CERTIFICATE_BOUND,
    ),
    {
        "oneOf": [
            *({"required": [k]} for k in KEY_SOURCES[:-1]),
            {
                "required": ["discovery"],
                "properties": {
                    "discovery": {"const": True, "description": "Discovery as the key source."}
                },
            },
        ]
    },
)

MTLS = Section(
    "mtls",
    "Workload identity from the mTLS peer.",
    (
        Key(
            "trust_domains",
            listed(
                "Peers outside these SPIFFE trust domains are unauthenticated.",
                text("A trust domain, like cluster.local.", r"^[^/:\s]+$"),
            ),
        ),
        Key(
            "trust_domain_aliases",
            listed(
                "Istio's trustDomainAliases (needs trust_domains): peers in an alias are "
                "authenticated too, and a principal written with any trust domain of the set "
                "matches the same ns/sa in all of them.",
                text("A trust domain, like old.local.", r"^[^/:\s]+$"),
            ),
        ),
    ),
    {"dependentRequired": {"trust_domain_aliases": ["trust_domains"]}},
)

API_KEY_PROVIDER = Section(
    "an api_keys provider",
    "API keys as an identity: where the key is looked for, and the key file holding the "
    "SHA-256 of each key (`authz apikey new` makes keys).",
    (
        Key(
            "name",
            text("Unique across the set; the principal is `<name>/<id>`.", NAME_PATTERN),
            required=True,
        ),
        Key(
            "from",
            listed(
                "Where the key is looked for: a header (optional prefix), query or cookie.",
                _ref("token_location"),
            ),
            required=True,
        ),
        Key(
            "keys_file",
            text(
                "The key file (`*.keys.yaml`), relative to this file, inside the policy "
                "directory; reloaded with it.",
                r"\.keys\.ya?ml$",
            ),
            required=True,
        ),
    ),
)


AUTHENTICATION = Section(
    "authentication",
    "How requests to these hosts are authenticated.",
    (
        Key("mtls", _ref("mtls")),
        Key("jwt", listed("End-user identity from JWTs.", _ref("provider"))),
        Key("api_keys", listed("API keys as an identity.", _ref("api_key_provider"))),
        Key(
            "introspection",
            listed(
                "Opaque tokens checked at an RFC 7662 introspection endpoint.",
                _ref("introspection_provider"),
            ),
        ),
    ),
)

FILE = Section(
    "a policy file",
    "One file of an authz policy set. All files of the directory together form one set; "
    "`authz validate` checks what this schema cannot (roles, unique names, path normal form).",
    (
        Key(
            "hosts",
            listed(
                "The hosts this file applies to: exact, or `*.suffix` (one or more labels). "
                "Omitted: every host.",
                text("A host name or `*.suffix`.", HOST_PATTERN),
            ),
        ),
        Key("authentication", _ref("authentication")),
        Key(
            "roles",
            {
                "type": "object",
                "description": "Named, reusable permission sets, used as `to: [{role: name}]`.",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": listed(
                    "The role's entries (any may match).", _ref("role_entry")
                ),
            },
        ),
        Key(
            "rules",
            listed(
                "The rules. A deny that matches wins; else an allow that matches; else deny.",
                _ref("rule"),
            ),
        ),
        Key(
            "rate_limits",
            listed(
                "Counted for requests the rules allowed; one over its limit makes a 429.",
                _ref("rate_limit"),
            ),
        ),
    ),
)
