"""SPIFFE IDs and the workload identity they give.

Parsing follows the SPIFFE ID standard (github.com/spiffe/spiffe, standards/SPIFFE-ID.md) as
strictly as go-spiffe's `spiffeid.FromString` does:

- the scheme is exactly `spiffe` followed by `://` (section 2);
- the trust domain is 1..255 characters of `[a-z0-9.-_]` only: no upper case, no port, no
  user info, no percent-encoding (section 2.1);
- the path is empty or a sequence of `/segment`, each segment non-empty, of `[a-zA-Z0-9.-_]`,
  and neither `.` nor `..`; no trailing slash (section 2.2);
- no query and no fragment, at most 2048 bytes in all (section 2.3).

An ID that breaks any of these is not a SPIFFE ID at all. Such a principal never authenticates:
prefix patterns like `spiffe://td/ns/a/*` must not be matched by `spiffe://td/ns/a/../b`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.identity.cache import BoundedCache, text_bytes
from authz.identity.header_value import is_header_value
from authz.model import Workload
from authz.request.syntax import SPIFFE_PREFIX

__all__ = ["SpiffeId", "parse_spiffe_id", "workload_for"]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID; `namespace`/`service_account` only for Istio's `/ns/<ns>/sa/<sa>`."""

    id: str
    trust_domain: str
    path: str
    namespace: str | None = None
    service_account: str | None = None


# Both caches below: the same few principals arrive on every request. Keyed by what a peer
# sends, so bounded in bytes too (issue 10.2); a principal over the SPIFFE length limit is
# never cached (nor ever valid).
_CACHE_ENTRIES = 4096
_CACHE_BYTES = 4 * 1024 * 1024
_MAX_CACHED = 8 * 1024
_parsed: BoundedCache[str, SpiffeId | None] = BoundedCache(
    entries=_CACHE_ENTRIES, budget=_CACHE_BYTES, max_entry=_MAX_CACHED
)
_workloads: BoundedCache[tuple[str, frozenset[str] | None], Workload | None] = BoundedCache(
    entries=_CACHE_ENTRIES, budget=_CACHE_BYTES, max_entry=_MAX_CACHED
)


def parse_spiffe_id(text: str) -> SpiffeId | None:
    """The SPIFFE ID in `text`, or None when `text` is not a valid SPIFFE ID. Cached."""
    if len(text) > _MAX_LENGTH:
        return None  # more characters than bytes allowed: never valid, never cached
    hit = _parsed.get(text)
    if hit is not None:
        return hit.value
    parsed = _parse(text)
    # The ID and its parts are copies of the text: about three times its size.
    _parsed.put(text, parsed, 3 * text_bytes(text))
    return parsed


def _parse(text: str) -> SpiffeId | None:
    if len(text.encode("utf-8", "surrogatepass")) > _MAX_LENGTH or not text.startswith(
        SPIFFE_PREFIX
    ):
        return None
    rest = text[len(SPIFFE_PREFIX) :]
    trust_domain, slash, path = rest.partition("/")
    # `?`, `#`, `:`, `@` and `%` are all outside the allowed character sets, so matching the
    # sets rejects queries, fragments, ports, user info and percent-encoding at once.
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return None
    segments: list[str] = []
    if slash:
        segments = path.split("/")
        for segment in segments:
            # An empty segment covers both `//` and a trailing `/`.
            if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
                return None
    namespace = service_account = None
    if len(segments) == 4 and segments[0] == "ns" and segments[2] == "sa":
        namespace, service_account = segments[1], segments[3]
    return SpiffeId(text, trust_domain, slash + path, namespace, service_account)


def workload_for(principal: str, trust_domains: frozenset[str] | None) -> Workload | None:
    """The workload a verified peer principal stands for, or None (unauthenticated).

    - A valid SPIFFE ID gives its trust domain, and for `/ns/<ns>/sa/<sa>` namespace and
      service account. Its trust domain must be in `trust_domains` when that is given.
    - Something that looks like a SPIFFE ID but is not valid: unauthenticated, always.
    - Any other principal (a DNS SAN, a subject): a Workload with only `principal` when no
      trust domains are configured; unauthenticated when they are, because such a peer
      belongs to no trust domain and so to none of the allowed ones (fail closed), and when it
      could not be sent upstream as a header value (control characters).

    Cached (bounded in entries and bytes): Workload is immutable, and a host's trust domains
    are one frozenset (shared with the policy, so not weighed here).
    """
    key = (principal, trust_domains)
    hit = _workloads.get(key)
    if hit is not None:
        return hit.value
    workload = _workload(principal, trust_domains)
    # The Workload shares the principal string; its trust domain, namespace and account are
    # copies of parts of it.
    _workloads.put(key, workload, 2 * text_bytes(principal))
    return workload


def _workload(principal: str, trust_domains: frozenset[str] | None) -> Workload | None:
    if not principal:
        return None
    spiffe = parse_spiffe_id(principal)
    if spiffe is None:
        if trust_domains is not None or principal[: len(SPIFFE_PREFIX)].lower() == SPIFFE_PREFIX:
            return None
        if not is_header_value(principal):
            # It would go upstream in the principal header, which Envoy would refuse.
            return None
        return Workload(principal=principal)
    # Trust domain names are case-insensitive (SPIFFE-ID section 2.1) and a valid ID's is
    # lower case already; the configured names may not be, so compare lower case on a miss.
    if (
        trust_domains is not None
        and spiffe.trust_domain not in trust_domains
        and spiffe.trust_domain not in {td.lower() for td in trust_domains}
    ):
        return None
    return Workload(
        principal=principal,
        trust_domain=spiffe.trust_domain,
        namespace=spiffe.namespace,
        service_account=spiffe.service_account,
    )
