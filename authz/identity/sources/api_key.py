"""API keys as an identity (docs/policy.md, "API keys"); the lookup is `authz.identity.apikeys`."""

from __future__ import annotations

from collections.abc import Callable

from authz.identity.apikeys import find_api_key, key_hash
from authz.identity.jwt import KeyWait
from authz.model import Identity, Request
from authz.policy.language.spec import Authentication

__all__ = ["ApiKeySource"]


class ApiKeySource:
    """The key presented in a provider's location, hashed and looked up in its key file.

    `digest` hashes a presented key (SHA-256 hex); the authoring tools pass one that also knows
    the placeholder they present for a key given as `<provider>/<id>` (key files hold only
    hashes, so a tool cannot present the key itself)."""

    name = "api_keys"

    def __init__(self, digest: Callable[[str], str] = key_hash) -> None:
        self._digest = digest

    def named_by(self, auth: Authentication) -> bool:
        return bool(auth.api_key_providers)

    def resolve(
        self, request: Request, auth: Authentication, now: float, wait: KeyWait
    ) -> Identity | None:
        # Raises ApiKeyRejected (401 `api_key_invalid`) for a presented key nobody knows.
        key = find_api_key(request, auth.api_key_providers, self._digest)
        return Identity(api_key=key) if key is not None else None

    def cache_inputs(self, request: Request, auth: Authentication) -> tuple[str, ...] | None:
        return ()  # the key's locations are in the cache key; the key files are in the set

    def state(self, auth: Authentication) -> tuple[object, ...]:
        return ()
