"""Fixtures for the identity tests: real key registries (always closed) and request builders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authz.identity import KeyRegistry
from authz.model import Request

NOW = 1_800_000_000.0  # a fixed "now": verification never reads the wall clock


@pytest.fixture
def registries() -> Iterator[Callable[..., KeyRegistry]]:
    """Make KeyRegistry instances that are closed (threads joined) after the test."""
    made: list[KeyRegistry] = []

    def make(**kwargs: Any) -> KeyRegistry:
        registry = KeyRegistry(**kwargs)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def request(
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    peer_principal: str = "",
    peer_certificate: str = "",
    jwt_metadata: dict[str, dict[str, Any]] | None = None,
) -> Request:
    """A GET / request with what the test needs."""
    return Request(
        method="GET",
        path="/",
        host="shop.example.com",
        raw_path="/",
        query=query,
        headers=headers or {},
        peer_principal=peer_principal,
        peer_certificate=peer_certificate,
        jwt_metadata=jwt_metadata or {},
    )


def bearer(token: str) -> Request:
    """A request with `Authorization: Bearer <token>`."""
    return request(headers={"authorization": f"Bearer {token}"})


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until true or `timeout` seconds passed (generous, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture(autouse=True)
def no_leftover_fetchers() -> Iterator[None]:
    """Every test leaves no JWKS fetcher thread behind (registries are closed and joined)."""
    import threading

    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("jwks:")]
    assert not leftover, f"fetcher threads left running: {leftover}"
