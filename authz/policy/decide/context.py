"""What a compiled rule looks at: one request and its identity, prepared once per check.

Everything a rule might need more than once (the parsed source IP, the first path segment)
is computed here, so each compiled predicate is a lookup or a comparison.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from authz.model import ApiKeyUser, EndUser, Identity, Request, Workload
from authz.policy.language.patterns import IPAddress
from authz.policy.language.spec import Authentication
from authz.request.headers import ABSENT

_UNSET: Any = object()
_NONE: Mapping[str, str] = MappingProxyType({})


class RequestContext:
    """A request and identity as the compiled matchers see them (read-only by convention)."""

    __slots__ = (
        "_ip",
        "_query",
        "_request",
        "api_key",
        "claims",
        "headers",
        "host",
        "issuer",
        "method",
        "namespace",
        "path",
        "paths",
        "port",
        "principal",
        "request_principal",
        "user",
        "workload",
    )  # fmt: skip

    def __init__(self, request: Request, identity: Identity, authentication: Authentication):
        self.method = request.method
        self.path = request.path
        # Every reading of the path (`;params` cut or not): rules quantify over these.
        self.paths = request.path_readings
        self.host = request.host  # canonical already (authz.wire.inbound)
        self.port = request.destination_port
        self.headers: Mapping[str, str] = request.headers
        workload = identity.workload
        # Defence in depth: the identity layer should already have dropped a peer from outside
        # the host's trust domains (docs/policy.md, "Identity"); a non-SPIFFE peer has none.
        tds = authentication.trust_domains
        if workload is not None and tds is not None:
            td = workload.trust_domain
            if td is None or td.lower() not in tds:
                workload = None
        self.workload: Workload | None = workload
        self.principal = workload.principal if workload is not None else None
        self.namespace = workload.namespace if workload is not None else None
        self.user: EndUser | None = identity.user
        self.request_principal = self.user.principal if self.user is not None else None
        self.issuer = self.user.issuer if self.user is not None else None
        self.claims: Mapping[str, Any] | None = self.user.claims if self.user is not None else None
        self.api_key: ApiKeyUser | None = identity.api_key
        # What only some rules read (the source IP, the query, the route's context) is taken
        # from the request when first read: a check pays for none of it up front.
        self._request = request
        self._ip: IPAddress | None = _UNSET

    @property
    def authenticated(self) -> bool:
        return self.workload is not None or self.user is not None or self.api_key is not None

    @property
    def api_key_principal(self) -> str | None:
        return self.api_key.principal if self.api_key is not None else None

    @property
    def api_key_labels(self) -> Mapping[str, str]:
        return self.api_key.labels if self.api_key is not None else _NONE

    @property
    def context(self) -> Mapping[str, str]:
        """Envoy's `context_extensions` for the request's route."""
        return self._request.context

    @property
    def query(self) -> Mapping[str, tuple[str, ...]]:
        """The decoded query parameters, parsed on first use: a name spelled with different
        encodings (`a%62c`, `abc`) is one parameter, and a repeated one has all its values."""
        try:
            return self._query  # set on first use only
        except AttributeError:
            self._query: Mapping[str, tuple[str, ...]] = self._request.query_params()
            return self._query

    def query_readings(self, name: str) -> tuple[str | None, ...]:
        """Every reading of the query parameter `name` (one per value; `(None,)` if absent)."""
        return self.query.get(name) or ABSENT

    def header_readings(self, name: str) -> tuple[str | None, ...]:
        """Every reading of the header `name` (`Request.header_readings`)."""
        return self._request.header_readings(name)

    @property
    def ip(self) -> IPAddress | None:
        """The source address, parsed on first use; None when absent or unparsable."""
        if self._ip is _UNSET:
            self._ip = _parse_ip(self._request.source_ip)
        return self._ip


def _parse_ip(raw: str | None) -> IPAddress | None:
    if not raw:
        return None
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone id is not part of the address we match
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
