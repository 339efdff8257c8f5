"""One root error. Every error that can decide a request carries a stable reason code
(`authz.reasons.Reason`, which also gives the HTTP status it stands for); the same code goes to
the decision log, the metric label and Envoy's dynamic metadata. Foreign exceptions (PyJWT, YAML,
gRPC) are translated into these in the one module that uses the library, chained with
`raise ... from`.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.reasons import Reason
from authz.token_check import TokenCheck


class AuthzError(Exception):
    """Root of every error this service raises on purpose. `reason` must be a code of the
    table (a made-up one raises ValueError here, so it cannot reach a log or a metric)."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, message: str = "", *, reason: str | None = None):
        if reason is not None:
            self.reason = Reason.of(reason)
        super().__init__(message or self.reason.value)

    @property
    def status(self) -> int:
        """The HTTP status the reason stands for."""
        return self.reason.status


class BadRequest(AuthzError):
    """The request cannot be judged safely: denied with 400."""

    reason = Reason.BAD_REQUEST


class InvalidPath(BadRequest):
    reason = Reason.INVALID_PATH


class InvalidHost(BadRequest):
    """`:authority` is not a host name or IP literal with an optional numeric port."""

    reason = Reason.INVALID_HOST


class InvalidMethod(BadRequest):
    """The method is not an upper-case HTTP token (docs/policy.md: `get` is refused, not folded)."""

    reason = Reason.INVALID_METHOD


class RequestTooLarge(BadRequest):
    """Over a configured limit on the headers (count, total size) or the path."""

    reason = Reason.REQUEST_TOO_LARGE


class AttributeTooLarge(BadRequest):
    """One attribute (principal, certificate, host, method, a header value, XFCC, jwt_authn
    metadata) is over its `Limits` bound: refused before it is parsed or cached."""

    reason = Reason.ATTRIBUTE_TOO_LARGE


class TokenRejected(AuthzError):
    """A JWT was present and failed verification: denied at once with 401."""

    reason = Reason.JWT_INVALID
    # The verification that refused it (traces show it), set by the verifier.
    token_check: TokenCheck | None = None


class ApiKeyRejected(AuthzError):
    """An API key was presented and is not known (or several were): denied at once with 401.

    `realm` is the provider whose location held the key, for the `WWW-Authenticate` challenge.
    """

    reason = Reason.API_KEY_INVALID

    def __init__(self, message: str, *, realm: str):
        super().__init__(message)
        self.realm = realm


class IntrospectionUnavailable(AuthzError):
    """An introspection endpoint could not answer (down, slow, garbage): 503, never an allow."""

    reason = Reason.INTROSPECTION_UNAVAILABLE


class WorkloadRejected(AuthzError):
    """The peer certificate was given but could not be verified."""

    reason = Reason.PEER_CERTIFICATE_INVALID


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy file: where, and what. Line 0 means the file or directory
    as a whole (it cannot be read, it does not exist), and is not printed."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    @classmethod
    def decoded(cls, file: str, data: bytes) -> str | Problem:
        """`data` as UTF-8 text, or the problem at the line of its first bad byte."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            return cls(file, line, f"not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})")


class PolicyError(AuthzError):
    """A policy set that cannot be used, with every problem found."""

    reason = Reason.INVALID_POLICY

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(AuthzError):
    """The service's own configuration is unusable (flags, config file, environment)."""

    reason = Reason.INVALID_CONFIG
