"""Every reason code the service can give for a decision, in one table.

A code goes, unchanged, to the decision log, the `reason` metric label, Envoy's dynamic metadata
and `authz explain`. Allows and rule-decided denies carry the rule's name instead, so no rule may
be named like a code (`authz.policy.language.schema.RESERVED_NAMES` and the JSON Schema are this
table). Each member is the code itself (a `str`), with the HTTP status it stands for and what it
means.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A stable reason code: `Reason.JWT_EXPIRED == "jwt_expired"`, `.status`, `.meaning`."""

    status: int
    meaning: str

    def __new__(cls, code: str, status: int, meaning: str) -> Reason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.meaning = meaning
        return member

    @classmethod
    def of(cls, code: str) -> Reason:
        """The member for `code`; ValueError when the table has no such code."""
        member = cls._value2member_map_.get(code)
        if not isinstance(member, Reason):
            raise ValueError(f"{code!r} is not a reason code (authz.reasons.Reason)")
        return member

    # -- policy (authz.policy.decide.evaluate) -----------------------------------------------------
    NO_MATCHING_RULE = (
        "no_matching_rule",
        403,
        "no allow rule matched (401 with a Bearer challenge when a rule wanted a token)",
    )
    NO_POLICY_FOR_HOST = "no_policy_for_host", 403, "no policy file applies to the request's host"

    # -- the request itself (authz.wire.inbound, authz.request.paths) ------------------------
    BAD_REQUEST = "bad_request", 400, "the request cannot be judged safely (no method, no path)"
    INVALID_PATH = "invalid_path", 400, "the path cannot be normalized without guessing"
    INVALID_HOST = "invalid_host", 400, "the host is not a valid host name, IP literal or port"
    INVALID_METHOD = "invalid_method", 400, "the method is not an upper-case HTTP token"
    REQUEST_TOO_LARGE = "request_too_large", 431, "over the configured header or path bounds"
    ATTRIBUTE_TOO_LARGE = "attribute_too_large", 400, "another attribute over its configured bound"

    # -- end-user tokens (authz.identity.jwt, lookup, resolver): all 401 -------------------------
    JWT_INVALID = "jwt_invalid", 401, "the token failed verification"
    JWT_MALFORMED = "jwt_malformed", 401, "not a well-formed JWS, or a claim of the wrong type"
    JWT_ALG_NOT_ALLOWED = (
        "jwt_alg_not_allowed",
        401,
        "the algorithm is not allowed or not the key's",
    )
    JWT_KEYS_UNAVAILABLE = "jwt_keys_unavailable", 401, "the issuer's keys are not loaded"
    JWT_UNKNOWN_KID = "jwt_unknown_kid", 401, "no key of the issuer has the token's kid"
    JWT_BAD_SIGNATURE = "jwt_bad_signature", 401, "the signature does not verify"
    JWT_UNKNOWN_ISSUER = "jwt_unknown_issuer", 401, "no provider of the host has the token's iss"
    JWT_BAD_ISSUER = "jwt_bad_issuer", 401, "the iss does not fit the provider or the location"
    JWT_BAD_AUDIENCE = "jwt_bad_audience", 401, "none of the token's audiences is accepted"
    JWT_MISSING_CLAIM = "jwt_missing_claim", 401, "the token has no iss or no sub"
    JWT_INVALID_CLAIMS = "jwt_invalid_claims", 401, "a claim cannot be sent as a header value"
    JWT_EXPIRED = "jwt_expired", 401, "exp is past (60 s of clock skew allowed)"
    JWT_NOT_YET_VALID = "jwt_not_yet_valid", 401, "nbf is in the future (60 s of skew allowed)"

    TOKEN_IN_TWO_PLACES = (
        "token_in_two_places",
        401,
        "the token is sent in more than one place (RFC 6750 section 2: one method per request)",
    )
    TOKEN_NOT_BOUND = (
        "token_not_bound",
        401,
        "certificate_bound: the token's cnf x5t#S256 is not the client certificate's thumbprint",
    )

    # -- token introspection (authz.identity.sources.introspection, RFC 7662) --------------------
    TOKEN_INACTIVE = "token_inactive", 401, "the introspection endpoint says it is not active"
    INTROSPECTION_UNAVAILABLE = (
        "introspection_unavailable",
        503,
        "the introspection endpoint is down, slow or answered garbage: an outage, never an allow",
    )

    # -- API keys (authz.identity.apikeys) -------------------------------------------------------
    API_KEY_INVALID = (
        "api_key_invalid",
        401,
        "an API key was presented that no provider of the host knows (or several were)",
    )

    # -- workload identity (authz.identity.peer) ------------------------------------------------
    PEER_CERTIFICATE_INVALID = (
        "peer_certificate_invalid",
        403,
        "the peer certificate given by Envoy does not parse or verify",
    )
    XFCC_INVALID = "xfcc_invalid", 403, "a trusted x-forwarded-client-cert header is malformed"

    # -- the HTTP door (authz.wire.http) --------------------------------------------------------
    QUERY_TOKEN_NOT_REMOVABLE = (
        "query_token_not_removable",
        403,
        "HTTP mode: the allow must strip a query-string token, which HTTP answers cannot say",
    )
    HEADER_NOT_REPLACED = (
        "header_not_replaced",
        403,
        "forward-auth: the allow must set or remove a header the proxy does not replace",
    )

    # -- the service ----------------------------------------------------------------------------
    INTERNAL_ERROR = (
        "internal_error",
        403,
        "a bug inside the check: denied, 403 to the client, INTERNAL to Envoy",
    )
    # Never a request's answer (they stop a start or a reload), reserved all the same.
    INVALID_POLICY = "invalid_policy", 500, "the policy set cannot be used (start, reload)"
    INVALID_CONFIG = "invalid_config", 500, "the service's own configuration is unusable"


# The codes as plain strings, for membership tests (`"x" in Reason` raises TypeError before
# Python 3.12) and for the reserved names.
CODES: frozenset[str] = frozenset(reason.value for reason in Reason)
