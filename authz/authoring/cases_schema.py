"""The JSON Schema (draft 2020-12) of a policy test file (`*_test.yaml`), for editors.

A test file sits next to the policies but is not a policy, so it needs its own schema: with the
policy schema an editor flags every `cases:` as an unknown field. Field names come from
`authz.authoring.cases` (the real parser); a test keeps the field sets equal and feeds both the
same documents.
"""

from __future__ import annotations

import json
from typing import Any

from authz.authoring.cases import MAX_REPEAT
from authz.policy.language.kinds import METHOD_PATTERN

SCHEMA_ID = "https://authz.example.dev/schemas/policy-test.schema.json"

_NONEMPTY = {"type": "string", "minLength": 1}

_REQUEST_PROPERTIES: dict[str, dict[str, Any]] = {
    "method": {
        "type": "string",
        "pattern": METHOD_PATTERN,
        "description": "The HTTP method, upper case (gRPC calls are POST).",
    },
    "path": {
        **_NONEMPTY,
        "description": "The path as the client sends it, query string included; it is "
        "normalized as the service normalizes it.",
    },
    "host": {**_NONEMPTY, "description": "The request's host (`:authority`)."},
    "principal": {
        **_NONEMPTY,
        "description": "The mTLS workload principal, e.g. spiffe://cluster.local/ns/x/sa/y.",
    },
    "headers": {
        "type": "object",
        "description": "Request headers: name -> value.",
        "additionalProperties": {"type": ["string", "number"]},
    },
    "claims": {
        "type": "object",
        "description": "The claims of a JWT that passed verification (`iss` and `sub` needed).",
        "required": ["iss", "sub"],
        "properties": {
            "iss": {**_NONEMPTY, "description": "The issuer."},
            "sub": {**_NONEMPTY, "description": "The subject."},
        },
    },
    "introspection": {
        "type": "object",
        "description": "What an introspection endpoint answers for the request's opaque token "
        "(RFC 7662: `active` and the members, e.g. sub, scope, exp, cnf).",
        "required": ["active"],
        "properties": {"active": {"type": "boolean", "description": "Whether it is active."}},
    },
    "introspected_by": {
        **_NONEMPTY,
        "description": "The introspection provider whose location carries the opaque token "
        "(default: the host's first).",
    },
    "certificate_thumbprint": {
        **_NONEMPTY,
        "description": "The client certificate's x5t#S256 (base64url SHA-256 of its DER), for "
        "providers with certificate_bound: true.",
    },
    "api_key": {
        **_NONEMPTY,
        "pattern": "^[^/]+/[^/]+$",
        "description": "An API key of the set, as `<provider>/<id>` (key files hold only hashes, "
        "so a case names the key); one the set does not know is refused with api_key_invalid.",
    },
    "context": {
        "type": "object",
        "description": "Envoy's per-route context_extensions: key -> value.",
        "additionalProperties": {"type": "string"},
    },
    "query": {
        "type": "object",
        "description": "Query parameters added to the path: name -> value or list of values.",
        "additionalProperties": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
    },
    "source_ip": {**_NONEMPTY, "description": "The client address, IPv4 or IPv6."},
    "port": {
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
        "description": "The destination port.",
    },
}

_EXPECT_PROPERTIES: dict[str, dict[str, Any]] = {
    "decision": {"enum": ["allow", "deny"], "description": "allow | deny."},
    "status": {"type": "integer", "description": "Optional: the HTTP status (200, 401, 403, ...)."},
    "reason": {**_NONEMPTY, "description": "Optional: a rule name or a reason code."},
}


def _request(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": _REQUEST_PROPERTIES,
    }


def cases_schema() -> dict[str, Any]:
    """The JSON Schema of one policy test file, as a plain (JSON-ready) dict."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "authz policy test file",
        "description": "Requests and the decisions the policy set must give them; run with "
        "`authz test DIR`. Never loaded as a policy.",
        "type": "object",
        "additionalProperties": False,
        "required": ["cases"],
        "properties": {
            "defaults": _request("Request fields every case starts from."),
            "cases": {
                "type": "array",
                "minItems": 1,
                "description": "The cases; names unique in the file.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "expect"],
                    "properties": {
                        "name": {**_NONEMPTY, "description": "Shown when the case fails."},
                        "repeat": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_REPEAT,
                            "description": "Send the request this many times in one window "
                            "(rate limits count them); `expect` is for the last one.",
                        },
                        "request": _request(
                            "The request (over `defaults`); method, path and host are needed "
                            "from one of the two."
                        ),
                        "expect": {
                            "type": "object",
                            "description": "What the policy set must decide.",
                            "additionalProperties": False,
                            "required": ["decision"],
                            "properties": _EXPECT_PROPERTIES,
                        },
                    },
                },
            },
        },
    }


def cases_schema_text() -> str:
    """The schema as written to `docs/policy-test.schema.json` (`authz schema --tests`)."""
    return json.dumps(cases_schema(), indent=2, ensure_ascii=False) + "\n"
