"""Every identity cache is bounded in bytes, not only entries (issue 10.2): filled with large
distinct keys, each stays within its byte budget, and an entry over its stated size is never
stored. Memory is measured with tracemalloc (allocations still held), not timed."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authz.config import Settings
from authz.identity import KeyRegistry, parse_xfcc, workload_for
from authz.identity import peer as peer_module
from authz.identity import spiffe as spiffe_module
from authz.identity.cache import ENTRY_OVERHEAD, BoundedCache
from authz.identity.peer import MAX_CACHED_PEM_BYTES, PeerCertificateVerifier
from authz.identity.sources import ServiceResolver
from authz.policy.language.spec import Authentication, JwtProvider
from tests.support.tokens import SigningKey, claims, jwks_json, make_key

from .conftest import NOW, bearer
from .test_peer import Ca, envoy_pem, make_ca, make_leaf

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def empty_module_caches() -> Iterator[None]:
    """The module-level caches start empty, so what a test measures is its own doing."""
    caches = (spiffe_module._parsed, spiffe_module._workloads, peer_module._xfcc_cache)
    for cache in caches:
        cache.clear()
    yield
    for cache in caches:
        cache.clear()


def held_after(fill: Callable[[], None]) -> int:
    """Bytes allocated by `fill` and still held when it returns."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# -- the cache itself ----------------------------------------------------------------------------


def test_bounded_in_entries_bytes_and_entry_size() -> None:
    few: BoundedCache[str, str] = BoundedCache(entries=10, budget=MiB, max_entry=5_000)
    for i in range(100):
        few.put(f"k{i}", "v", 10)
    assert len(few) == 10  # small entries: the entry bound holds
    cache: BoundedCache[str, str] = BoundedCache(entries=1_000, budget=100_000, max_entry=5_000)
    for i in range(100):
        assert cache.put(f"k{i}", "v", 4_000)
    assert cache.bytes <= 100_000 and len(cache) == 100_000 // (4_000 + ENTRY_OVERHEAD)
    assert cache.get("k99") is not None and cache.get("k0") is None  # LRU: the oldest went
    assert not cache.put("huge", "v", 5_000)  # over max_entry (with overhead): never stored
    assert cache.get("huge") is None


def test_a_cached_none_is_a_hit() -> None:
    cache: BoundedCache[str, str | None] = BoundedCache(entries=2, budget=1_000, max_entry=1_000)
    cache.put("k", None, 1)
    hit = cache.get("k")
    assert hit is not None and hit.value is None


# -- spiffe: principals --------------------------------------------------------------------------


def test_principal_caches_stay_within_their_byte_budget() -> None:
    # 4096 distinct 3 KiB principals (a non-SPIFFE principal: a Workload when no trust domains
    # are configured). The old 4096-entry lru_caches held all of them: 12+ MiB.
    def fill() -> None:
        for i in range(4096):
            principal = f"{i:08d}" + "x" * 3000
            assert workload_for(principal, None) is not None

    held = held_after(fill)
    budget = spiffe_module._CACHE_BYTES
    assert spiffe_module._workloads.bytes <= budget
    assert spiffe_module._parsed.bytes <= budget
    assert held < 2 * budget + MiB, held


def test_oversized_principals_are_never_cached() -> None:
    def fill() -> None:
        for i in range(64):
            assert workload_for(f"{i:08d}" + "x" * 256 * 1024, None) is not None

    held = held_after(fill)
    assert len(spiffe_module._workloads) == 0 and len(spiffe_module._parsed) == 0
    assert held < MiB, held  # the old caches held 64 x 256 KiB


# -- the verified-token cache --------------------------------------------------------------------


def one_provider(
    registries: Callable[..., KeyRegistry], **resolver_options: Any
) -> tuple[SigningKey, JwtProvider, ServiceResolver, Authentication]:
    """A fresh ES256 key, a provider with that key inline, and a resolver that knows it."""
    key = make_key("ES256")
    provider = JwtProvider(issuer="https://id.example.com", jwks_json=jwks_json(key))
    registry = registries()
    registry.ensure([provider])
    resolver = ServiceResolver(Settings(), registry, **resolver_options)
    return key, provider, resolver, Authentication(jwt_providers=(provider,))


def test_token_cache_stays_within_its_byte_budget(
    registries: Callable[..., KeyRegistry],
) -> None:
    budget = MiB
    key, provider, resolver, auth = one_provider(registries, token_cache_bytes=budget)
    # Large distinct valid tokens (about 12 KiB each): 300 of them are 3.6 MiB of tokens alone.
    tokens = [
        key.sign(claims(provider.issuer, now=NOW, subject=f"u{i}", pad="p" * 9000))
        for i in range(300)
    ]

    def fill() -> None:
        for token in tokens:
            assert resolver.resolve(bearer(token), auth, NOW).user is not None

    held = held_after(fill)
    cache = resolver.verifier._cache
    assert 0 < len(cache) < 300 and cache.bytes <= budget
    assert held < budget + MiB, held


def test_token_whose_claims_are_too_large_is_never_cached(
    registries: Callable[..., KeyRegistry],
) -> None:
    key, provider, resolver, auth = one_provider(registries)
    # About 10 KiB of JSON that decodes to about 200 KiB of objects (3500 empty lists).
    token = key.sign(claims(provider.issuer, now=NOW, nest=[[] for _ in range(3500)]))
    for _ in range(3):
        assert resolver.resolve(bearer(token), auth, NOW).user is not None
    assert resolver.verifier.signature_checks == 3 and len(resolver.verifier._cache) == 0


# -- certificates and XFCC -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Ca:
    return make_ca()


def test_certificate_cache_stays_within_its_byte_budget(ca: Ca) -> None:
    budget = 64 * 1024
    verifier = PeerCertificateVerifier(ca.pem(), cache_bytes=budget)
    # Distinct certificates with a long URI SAN: about 6 KiB each, URL-encoded.
    pems = [
        envoy_pem(make_leaf(ca, uri=f"spiffe://cluster.local/ns/shop/sa/w{i}/" + "p" * 3000))
        for i in range(40)
    ]
    for pem in pems:
        verifier.principal(pem, NOW)
    assert 0 < len(verifier._cache) < 40 and verifier._cache.bytes <= budget


def test_oversized_certificate_is_verified_but_never_cached(ca: Ca) -> None:
    verifier = PeerCertificateVerifier(ca.pem())
    big = envoy_pem(make_leaf(ca, uri="spiffe://cluster.local/ns/shop/sa/" + "p" * 60_000))
    assert len(big) > MAX_CACHED_PEM_BYTES
    assert verifier.principal(big, NOW).startswith("spiffe://cluster.local/ns/shop/sa/p")
    assert len(verifier._cache) == 0


def test_xfcc_cache_stays_within_its_byte_budget() -> None:
    # `a=;a=;...` parses into many small objects: weighed as parsed, not by its text.
    def fill() -> None:
        for i in range(1024):
            assert parse_xfcc(f"By={i};" + "a=;" * 60)

    held = held_after(fill)
    budget = peer_module._XFCC_CACHE_BYTES
    assert 0 < len(peer_module._xfcc_cache) < 1024
    assert peer_module._xfcc_cache.bytes <= budget
    assert held < budget + MiB, held  # the old 1024-entry lru_cache held about 9 MiB


def test_oversized_xfcc_is_never_cached() -> None:
    assert parse_xfcc("By=x;" + "a=;" * 1000)  # parsed: far over the 16 KiB an entry may have
    assert len(peer_module._xfcc_cache) == 0
