"""One root error. Every error that can decide a request carries a stable reason code and the
HTTP status it stands for; the same code goes to the decision log, the metric label and Envoy's
dynamic metadata. Foreign exceptions (PyJWT, YAML, gRPC) are translated into these in the one
module that uses the library, chained with `raise ... from`.
"""

from __future__ import annotations

from dataclasses import dataclass


class AuthzError(Exception):
    """Root of every error this service raises on purpose."""

    reason: str = "internal_error"
    status: int = 403

    def __init__(self, message: str = "", *, reason: str | None = None, status: int | None = None):
        super().__init__(message or (reason or self.reason))
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status


class BadRequest(AuthzError):
    """The request cannot be judged safely: denied with 400."""

    reason = "bad_request"
    status = 400


class InvalidPath(BadRequest):
    reason = "invalid_path"


class RequestTooLarge(BadRequest):
    """Over a configured limit (header count or size, path length)."""

    reason = "request_too_large"
    status = 431


class TokenRejected(AuthzError):
    """A JWT was present and failed verification: denied at once with 401."""

    reason = "jwt_invalid"
    status = 401


class WorkloadRejected(AuthzError):
    """The peer certificate was given but could not be verified."""

    reason = "peer_certificate_invalid"
    status = 403


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


class PolicyError(AuthzError):
    """A policy set that cannot be used, with every problem found."""

    reason = "invalid_policy"

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(AuthzError):
    """The service's own configuration is unusable (flags, config file, environment)."""

    reason = "invalid_config"
