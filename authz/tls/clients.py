"""Which clients may call, by the identity in their certificate (`--tls-allowed-client`).

An entry is a SPIFFE ID (`spiffe://cluster.local/ns/mesh/sa/envoy`, or a prefix ending in `*`:
`spiffe://cluster.local/ns/mesh/*`) or a DNS name (`envoy.mesh.svc`, or `*.mesh.svc`: one or
more labels before the suffix). As the rule for ambiguous requests asks (docs/policy.md), a
client is let in only under every reading of its certificate: a SPIFFE entry needs exactly one
URI SAN (an X.509-SVID has one), and that one must match; a DNS entry needs a DNS SAN that
matches, as TLS name verification does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SPIFFE = "spiffe://"


def entry_problem(entry: str) -> str | None:
    """Why `entry` is not a usable allowed-client entry, or None."""
    if entry.startswith(SPIFFE):
        rest = entry.removeprefix(SPIFFE)
        if not rest or rest.startswith("/") or "*" in rest[:-1]:
            return f"{entry!r}: a SPIFFE ID is spiffe://TRUST-DOMAIN/PATH, with `*` only at the end"
        return None
    name = entry.removeprefix("*.")
    labels = name.split(".")
    if not name or any(
        not label or "*" in label or ":" in label or "/" in label for label in labels
    ):
        return f"{entry!r}: neither a SPIFFE ID (spiffe://...) nor a DNS name (name or *.suffix)"
    return None


@dataclass(frozen=True, slots=True)
class ClientAllowList:
    """The allowed-client entries, lower-cased where names are case-insensitive."""

    entries: tuple[str, ...]

    def __post_init__(self) -> None:
        for entry in self.entries:
            problem = entry_problem(entry)
            if problem is not None:
                raise ValueError(problem)

    def permits(self, uri_sans: Sequence[str], dns_sans: Sequence[str]) -> bool:
        """True when the certificate's SANs match one entry (see the module docstring)."""
        uri = uri_sans[0] if len(uri_sans) == 1 else None
        dns = [name.lower().rstrip(".") for name in dns_sans]
        for entry in self.entries:
            if entry.startswith(SPIFFE):
                if uri is not None and _spiffe_matches(entry, uri):
                    return True
            elif any(_dns_matches(entry.lower(), name) for name in dns):
                return True
        return False


def _spiffe_matches(entry: str, uri: str) -> bool:
    # The trust domain is case-insensitive (SPIFFE ID spec, 2.1); the path is not.
    if not uri.lower().startswith(SPIFFE):
        return False
    if entry.endswith("*"):
        return _fold_domain(uri).startswith(_fold_domain(entry[:-1]))
    return _fold_domain(uri) == _fold_domain(entry)


def _fold_domain(spiffe_id: str) -> str:
    rest = spiffe_id[len(SPIFFE) :]
    domain, slash, path = rest.partition("/")
    return SPIFFE + domain.lower() + slash + path


def _dns_matches(entry: str, name: str) -> bool:
    if entry.startswith("*."):
        suffix = entry[1:]  # ".mesh.svc"
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == entry
