"""The `introspection` provider of `authentication` (RFC 7662), declared once: the validator
(`authz.policy.language.validate_auth`) takes its keys from here and `authz schema` writes it."""

from __future__ import annotations

from authz.policy.language.kinds import HEADER_PATTERN, NAME_PATTERN, listed, text
from authz.policy.language.sections import CERTIFICATE_BOUND, Key, Section
from authz.policy.language.spec import IntrospectionProvider, TokenLocation


def _location(location: TokenLocation) -> dict[str, str]:
    return {"header": location.header or "", "prefix": location.prefix}


_INTROSPECTION_DEFAULTS = IntrospectionProvider("", "", "", "")

INTROSPECTION_CACHE = Section(
    "an introspection cache",
    "Bounds of the introspection answer cache (keyed by a SHA-256 digest of the token).",
    (
        Key(
            "max_ttl",
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 86400,
                "default": _INTROSPECTION_DEFAULTS.cache_ttl,
                "description": "Seconds an active answer is used at most (never past the "
                "token's exp): the revocation delay.",
            },
        ),
        Key(
            "inactive_ttl",
            {
                "type": "number",
                "minimum": 0,
                "maximum": 3600,
                "default": _INTROSPECTION_DEFAULTS.inactive_ttl,
                "description": "Seconds an inactive answer is used.",
            },
        ),
        Key(
            "entries",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 10**7,
                "default": _INTROSPECTION_DEFAULTS.cache_entries,
                "description": "At most this many answers.",
            },
        ),
        Key(
            "bytes",
            {
                "type": "integer",
                "minimum": 65536,
                "maximum": 2**34,
                "default": _INTROSPECTION_DEFAULTS.cache_bytes,
                "description": "At most this many bytes of answers.",
            },
        ),
    ),
)

INTROSPECTION_PROVIDER = Section(
    "an introspection provider",
    "OAuth 2.0 token introspection (RFC 7662) for opaque tokens. The client secret is read "
    "from client_secret_file or client_secret_env, never written here.",
    (
        Key("name", text("Unique across the set.", NAME_PATTERN), required=True),
        Key(
            "endpoint",
            text(
                "The introspection endpoint: https, or http on loopback only.",
                r"^(https://[^/\s]+|http://(127\.0\.0\.1|localhost|\[::1\])([:/]|$))",
            ),
            required=True,
        ),
        Key(
            "issuer",
            text("The iss of an answer that has none (for request_principals)."),
            required=True,
        ),
        Key("client_id", text("The client id for client_secret_basic."), required=True),
        Key(
            "client_secret_file",
            text("A file holding the client secret, relative to the policy file."),
        ),
        Key(
            "client_secret_env",
            text(
                "An environment variable holding the client secret (not AUTHZ_*: those are the "
                "service's settings).",
                r"^(?![Aa][Uu][Tt][Hh][Zz]_)[A-Za-z_][A-Za-z0-9_]*$",
            ),
        ),
        Key(
            "from",
            listed(
                "Where the token is looked for; default: `Authorization: Bearer`.",
                {"$ref": "#/$defs/token_location"},
            )
            | {"default": [_location(loc) for loc in _INTROSPECTION_DEFAULTS.locations]},
        ),
        Key(
            "tokens",
            {
                "enum": ["opaque", "all"],
                "default": _INTROSPECTION_DEFAULTS.tokens,
                "description": "opaque: tokens that are not JWTs (JWTs go to the jwt "
                "providers); all: every token.",
            },
        ),
        Key(
            "audiences",
            listed("The answer's aud must contain one of these.", text("An audience.")),
        ),
        Key(
            "timeout",
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 30,
                "default": _INTROSPECTION_DEFAULTS.timeout,
                "description": "Seconds to wait for the endpoint; then 503.",
            },
        ),
        Key("cache", {"$ref": "#/$defs/introspection_cache"}),
        Key(
            "forward",
            {
                "type": "boolean",
                "default": _INTROSPECTION_DEFAULTS.forward,
                "description": "true: the token also goes upstream (default: removed).",
            },
        ),
        Key(
            "claims_to_headers",
            {
                "type": "object",
                "description": "Answer member -> request header sent upstream.",
                "additionalProperties": text("A header name.", HEADER_PATTERN),
            },
        ),
        CERTIFICATE_BOUND,
    ),
    {
        "oneOf": [
            {"required": ["client_secret_file"]},
            {"required": ["client_secret_env"]},
        ]
    },
)
