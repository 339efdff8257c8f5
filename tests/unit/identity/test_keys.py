"""JWKS parsing and the key registry against a real JWKS server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz.config import Settings
from authz.errors import TokenRejected
from authz.identity import FetchResult, JwksError, KeyRegistry, parse_jwks
from authz.identity.sources import ServiceResolver
from authz.policy.language.spec import Authentication, JwtProvider
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, claims, jwks, make_key

from .conftest import NOW, bearer, eventually

# -- parsing -----------------------------------------------------------------------------------


def test_unusable_keys_are_skipped_and_reported() -> None:
    good = make_key("ES256", kid="good")
    document = jwks(good)
    document["keys"] += [
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "XYZ", "kid": "alien"},
        {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        "not an object",
        {"kty": "EC", "kid": 5, "crv": "P-256"},
        dict(good.jwk(), kid="good"),  # duplicate kid
    ]
    key_set = parse_jwks(json.dumps(document))
    assert [k.kid for k in key_set.keys] == ["good", "good"]
    assert key_set.find("good") is key_set.keys[0]
    reported = " ".join(key_set.skipped)
    for label in (
        "enc",
        "alien",
        "broken",
        "#4: not a JSON object",
        "5: kid is not a string",
        "duplicate",
    ):
        assert label in reported


@pytest.mark.parametrize(
    "document",
    [b"", b"not json", b"[]", b'{"keys": {}}', b'{"keys": []}', b'{"keys": [{"kty": "XYZ"}]}'],
)
def test_no_usable_key_is_an_error(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


def test_private_jwk_gives_only_the_public_key() -> None:
    from jwt.algorithms import ECAlgorithm

    key = make_key("ES256", kid="p")
    private = json.loads(ECAlgorithm.to_jwk(key.private))
    parsed = parse_jwks({"keys": [dict(private, kid="p")]})
    assert not hasattr(parsed.keys[0].key, "sign")


# -- the registry against a real server --------------------------------------------------------


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer() as running:
        yield running


class Recorder:
    """An on_fetch callback that keeps every result (thread-safe)."""

    def __init__(self) -> None:
        self.results: list[FetchResult] = []
        self._lock = threading.Lock()

    def __call__(self, issuer: str, result: FetchResult) -> None:
        with self._lock:
            self.results.append(result)

    def count(self, *, ok: bool | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.results if ok is None or r.ok == ok)


class Remote:
    """A provider on the server, its registry and a resolver."""

    def __init__(
        self, registries: Callable[..., KeyRegistry], server: JwksServer, **options: object
    ) -> None:
        self.server = server
        self.fetches = Recorder()
        options.setdefault("unknown_kid_cooldown", 3600)
        self.registry = registries(on_fetch=self.fetches, **options)
        self.provider = JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)
        self.auth = Authentication(jwt_providers=(self.provider,))
        self.resolver = ServiceResolver(Settings(), self.registry)

    def start(self) -> None:
        self.registry.ensure([self.provider])

    def token(self, key: SigningKey, **kwargs: object) -> str:
        return key.sign(claims(self.server.issuer, now=NOW, **kwargs))  # type: ignore[arg-type]

    def verify(self, token: str) -> str:
        """ "ok" or the rejection reason."""
        try:
            user = self.resolver.resolve(bearer(token), self.auth, NOW).user
        except TokenRejected as error:
            return error.reason
        assert user is not None
        return "ok"


def test_fetched_in_background_at_start(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server)
    server.hold()  # the first fetch cannot finish yet...
    remote.start()  # ...and ensure() does not wait for it
    assert server.wait_for_fetches(1)
    assert remote.registry.status() == {server.issuer: "pending"}
    assert remote.registry.wait_ready(0.05) is False
    # A check meanwhile is answered at once, without keys.
    assert remote.verify(remote.token(key)) == "jwt_keys_unavailable"
    server.release()
    assert remote.registry.wait_ready(10)
    assert remote.registry.status() == {server.issuer: "ready"}
    assert remote.verify(remote.token(key)) == "ok"
    assert remote.fetches.results[0].trigger == "start"


def test_rotation_first_token_of_the_new_key_is_accepted(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    old, new = make_key("ES256"), make_key("RS256")
    server.rotate(old)
    # A generous wait bound: this test is about order, not speed (the default is 0.2 s).
    remote = Remote(registries, server, unknown_kid_wait=30)
    remote.start()
    assert remote.registry.wait_ready(10)
    server.rotate(old, new)
    # The first request with the new kid triggers one refetch, waits for it, and is accepted
    # (issue 10.8: it used to be refused while the refetch ran in the background) ...
    assert remote.verify(remote.token(new)) == "ok"
    # ... and so is the old key.
    assert remote.verify(remote.token(old)) == "ok"
    assert server.fetches == 2
    assert [r.trigger for r in remote.fetches.results] == ["start", "unknown_kid"]


def test_made_up_kids_cost_one_fetch_per_cooldown(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server, unknown_kid_wait=30)
    remote.start()
    assert remote.registry.wait_ready(10)
    for i in range(1000):
        token = key.sign(claims(server.issuer, now=NOW), kid=f"made-up-{i}")
        assert remote.verify(token) == "jwt_unknown_kid"
    # The first waited for the one refetch; the other 999 were answered at once (cooldown).
    assert server.fetches == 2
    assert remote.verify(remote.token(key)) == "ok"


def test_unknown_kid_flood_honours_cooldown(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server, unknown_kid_cooldown=3600)
    remote.start()
    assert remote.registry.wait_ready(10)
    for i in range(50):
        assert (
            remote.verify(key.sign(claims(server.issuer, now=NOW), kid=f"made-up-{i}"))
            == "jwt_unknown_kid"
        )
    assert eventually(lambda: remote.fetches.count() == 2)
    for i in range(50):
        remote.verify(key.sign(claims(server.issuer, now=NOW), kid=f"more-{i}"))
    # Give a wrongly scheduled refetch every chance to show up, then count at the server.
    time.sleep(0.3)
    assert server.fetches == 2


def test_short_cooldown_allows_another_refetch(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server, unknown_kid_cooldown=0)
    remote.start()
    assert remote.registry.wait_ready(10)
    remote.verify(key.sign(claims(server.issuer, now=NOW), kid="x1"))
    assert server.wait_for_fetches(2)
    assert eventually(lambda: remote.fetches.count() == 2)
    remote.verify(key.sign(claims(server.issuer, now=NOW), kid="x2"))
    assert server.wait_for_fetches(3)


@pytest.mark.parametrize("failure", ["down", "garbage", "not_a_jwks", "no_usable_key"])
def test_last_good_keys_kept(
    registries: Callable[..., KeyRegistry], server: JwksServer, failure: str
) -> None:
    key = make_key("EdDSA")
    server.rotate(key)
    remote = Remote(registries, server)
    remote.start()
    assert remote.registry.wait_ready(10)
    if failure == "down":
        server.fail(503)
    elif failure == "garbage":
        server.garbage()
    elif failure == "not_a_jwks":
        server.serve_json({"hello": "world"})
    else:
        server.serve_json({"keys": [{"kty": "oct-ish"}]})
    assert (
        remote.verify(key.sign(claims(server.issuer, now=NOW), kid="unknown")) == "jwt_unknown_kid"
    )
    assert eventually(lambda: remote.fetches.count(ok=False) == 1)
    status = remote.registry.status()[server.issuer]
    assert status.startswith("stale: ")
    assert remote.verify(remote.token(key)) == "ok"
    failed = next(r for r in remote.fetches.results if not r.ok)
    assert failed.error and failed.trigger == "unknown_kid"


def test_slow_answer_never_blocks_resolve(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server)
    remote.start()
    assert remote.registry.wait_ready(10)
    server.hold()
    assert remote.verify(key.sign(claims(server.issuer, now=NOW), kid="new")) == "jwt_unknown_kid"
    assert server.wait_for_fetches(2)  # the refetch is in flight and held at the server
    # Checks go on, answered from memory, while the fetch hangs.
    for _ in range(20):
        assert remote.verify(remote.token(key)) == "ok"
    assert remote.fetches.count() == 1  # the held fetch has not finished
    server.release()
    assert eventually(lambda: remote.fetches.count() == 2)


def test_fetch_timeout_is_bounded(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(make_key("ES256"))
    server.hold()
    remote = Remote(registries, server, fetch_timeout=0.3)
    remote.start()
    assert eventually(lambda: remote.fetches.count(ok=False) >= 1)
    assert remote.registry.status()[server.issuer].startswith("unavailable: ")
    server.release()


def test_response_size_is_bounded(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(*[make_key("ES256") for _ in range(5)])
    remote = Remote(registries, server, max_jwks_bytes=200)
    remote.start()
    assert eventually(lambda: remote.fetches.count(ok=False) >= 1)
    assert "larger than 200 bytes" in remote.registry.status()[server.issuer]


def test_refreshed_on_ttl(registries: Callable[..., KeyRegistry], server: JwksServer) -> None:
    key = make_key("ES256")
    server.rotate(key)
    remote = Remote(registries, server, refresh_seconds=0.05)
    remote.start()
    assert server.wait_for_fetches(3)
    assert "refresh" in {r.trigger for r in remote.fetches.results}


def test_retry_after_failure_then_ready(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    key = make_key("ES256")
    server.fail(500)
    remote = Remote(registries, server)
    remote.start()
    assert eventually(lambda: remote.fetches.count(ok=False) >= 1)
    assert remote.registry.status()[server.issuer] == "unavailable: HTTP 500"
    server.rotate(key)
    # Retried after 1 s (backoff), not after the 300 s refresh period.
    assert remote.registry.wait_ready(10)
    assert "retry" in {r.trigger for r in remote.fetches.results}


def test_server_gone(registries: Callable[..., KeyRegistry]) -> None:
    with JwksServer() as gone:
        pass  # closed: nothing listens on its port any more
    remote = Remote(registries, gone)
    remote.start()
    assert eventually(lambda: remote.fetches.count(ok=False) >= 1)
    assert remote.registry.status()[gone.issuer].startswith("unavailable: fetch failed")


def test_discovery(registries: Callable[..., KeyRegistry], server: JwksServer) -> None:
    key = make_key("PS256")
    server.rotate(key)
    registry = registries()
    provider = JwtProvider(issuer=server.issuer, discovery=True)
    registry.ensure([provider])
    assert registry.wait_ready(10)
    assert server.discovery_fetches == 1 and server.fetches == 1
    resolver = ServiceResolver(Settings(), registry)
    token = key.sign(claims(server.issuer, now=NOW))
    assert (
        resolver.resolve(bearer(token), Authentication(jwt_providers=(provider,)), NOW).user
        is not None
    )


def test_discovery_issuer_mismatch(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(make_key("ES256"))
    server.discovery_issuer = "https://someone-else.example"
    recorder = Recorder()
    registry = registries(on_fetch=recorder)
    registry.ensure([JwtProvider(issuer=server.issuer, discovery=True)])
    assert eventually(lambda: recorder.count(ok=False) >= 1)
    assert "someone-else" in registry.status()[server.issuer]
    assert server.fetches == 0


def test_non_http_uri_refused(registries: Callable[..., KeyRegistry], tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(make_key("ES256"))))
    registry = registries()
    registry.ensure([JwtProvider(issuer="https://id", jwks_uri=path.as_uri())])
    assert eventually(lambda: registry.status()["https://id"] != "pending")
    assert "unsupported URI scheme" in registry.status()["https://id"]


def test_file_and_inline_sources_ready_at_once(
    registries: Callable[..., KeyRegistry], tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(make_key("ES256"))))
    registry = registries()
    registry.ensure(
        [
            JwtProvider(issuer="https://file", jwks_file=str(path)),
            JwtProvider(issuer="https://inline", jwks_json=json.dumps(jwks(make_key("ES384")))),
        ]
    )
    assert registry.status() == {"https://file": "ready", "https://inline": "ready"}
    assert registry.wait_ready(0)


def test_ensure_drops_gone_providers(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(make_key("ES256"))
    registry = registries()
    remote = JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)
    inline = JwtProvider(issuer="https://inline", jwks_json=json.dumps(jwks(make_key("ES256"))))
    registry.ensure([remote, inline])
    assert registry.wait_ready(10)
    before = {t.name for t in threading.enumerate()}
    assert f"jwks:{server.issuer}" in before
    registry.ensure([inline])
    assert set(registry.status()) == {"https://inline"}
    assert eventually(
        lambda: f"jwks:{server.issuer}" not in {t.name for t in threading.enumerate()}
    )
    # Same source after a reload: kept, not fetched again.
    registry.ensure([inline, remote])
    registry.ensure([inline, remote])
    assert registry.wait_ready(10)
    assert server.wait_for_fetches(2)
    time.sleep(0.1)
    assert server.fetches == 2


def test_on_fetch_errors_do_not_stop_the_fetcher(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(make_key("ES256"))
    calls: list[str] = []

    def broken(issuer: str, result: FetchResult) -> None:
        calls.append(issuer)
        raise RuntimeError("metrics bug")

    registry = registries(on_fetch=broken, refresh_seconds=0.05)
    registry.ensure([JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)])
    assert registry.wait_ready(10)
    assert server.wait_for_fetches(3)
    assert calls and calls[0] == server.issuer


def test_close_joins_threads(server: JwksServer) -> None:
    server.rotate(make_key("ES256"))
    registry = KeyRegistry()
    registry.ensure([JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)])
    assert registry.wait_ready(10)
    registry.close()
    assert f"jwks:{server.issuer}" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError):
        registry.ensure([])


def test_close_joins_the_threads_of_sources_a_reload_dropped(server: JwksServer) -> None:
    """A provider a reload removed while its fetch was in flight: close() waits for that
    thread too (it failed the leftover-thread check now and then under load)."""
    server.rotate(make_key("ES256"))
    server.hold()
    registry = KeyRegistry()
    registry.ensure([JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)])
    assert server.wait_for_fetches(1)  # the fetcher is inside its request, held
    registry.ensure([])
    releaser = threading.Timer(0.3, server.release)
    releaser.start()
    try:
        registry.close()
        assert f"jwks:{server.issuer}" not in {t.name for t in threading.enumerate()}
    finally:
        releaser.join()


def test_redirects_only_to_http(
    registries: Callable[..., KeyRegistry], server: JwksServer, tmp_path: Path
) -> None:
    key = make_key("ES256")
    with JwksServer([key]) as target:
        server.redirect_to = target.jwks_uri
        remote = Remote(registries, server)
        remote.start()
        assert remote.registry.wait_ready(10)
        assert target.fetches == 1 and remote.verify(remote.token(key)) == "ok"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    server.redirect_to = path.as_uri()
    recorder = Recorder()
    registry = registries(on_fetch=recorder)
    registry.ensure([JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)])
    assert eventually(lambda: recorder.count(ok=False) >= 1)
    assert registry.status()[server.issuer].startswith("unavailable: ")


def test_fetch_listener_added_later(
    registries: Callable[..., KeyRegistry], server: JwksServer
) -> None:
    server.rotate(make_key("ES256"))
    registry = registries(refresh_seconds=0.05)
    recorder = Recorder()
    registry.add_fetch_listener(recorder)
    registry.ensure([JwtProvider(issuer=server.issuer, jwks_uri=server.jwks_uri)])
    assert eventually(lambda: recorder.count(ok=True) >= 2)
    assert all(r.issuer == server.issuer and r.keys == 1 for r in recorder.results)
