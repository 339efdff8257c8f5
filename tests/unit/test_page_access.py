"""Who may read the decision page: open on loopback; off loopback only with the bearer token,
while /metrics and /readyz stay open for Prometheus and Kubernetes (real HTTP, in process)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.observe.admin import AdminServer, Readiness
from authz.observe.recent import RecentDecisions
from authz.page.access import ADMIN_TOKEN_ENV, on_loopback, read_token
from authz.page.routes import DecisionPages
from authz.page.views import Sources
from authz.policy import build_policy_set
from tests.support.ports import LOOPBACK

POLICY = "hosts: [shop.example.com]\nrules: [{name: public, action: allow}]\n"


def serve(token: str | None, open_without_token: bool) -> AdminServer:
    policy_set = build_policy_set([("shop.yaml", POLICY, "/p")])
    sources = Sources(
        policy=lambda: policy_set,
        policy_directory="/p",
        started_at=time.time(),
        last_reload=lambda: None,
        key_states=list,
        rate_limits=lambda: {"store": "memory", "state": "local"},
        recent=RecentDecisions(10, 1 << 20),
    )
    pages = DecisionPages(sources, token=token, open_without_token=open_without_token)
    admin = AdminServer(
        f"{LOOPBACK}:0", metrics=lambda: b"m 1\n", readiness=lambda: Readiness(True), pages=pages
    )
    admin.start()
    return admin


def get(admin: AdminServer, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://{LOOPBACK}:{admin.port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


@pytest.fixture
def off_loopback_without_token() -> Iterator[AdminServer]:
    admin = serve(None, open_without_token=False)
    yield admin
    admin.close()


def test_off_loopback_without_a_token_the_page_is_off_and_the_probes_answer(
    off_loopback_without_token: AdminServer,
) -> None:
    admin = off_loopback_without_token
    for path in ("/", "/decisions", "/decisions/x", "/api/", "/api/decisions"):
        assert get(admin, path) == 403, path
    assert get(admin, "/metrics") == 200
    assert get(admin, "/readyz") == 200
    assert get(admin, "/healthz") == 200


def test_with_a_token_every_page_needs_it() -> None:
    admin = serve("s3cret-token", open_without_token=True)
    try:
        assert get(admin, "/") == 401
        assert get(admin, "/api/", "wrong") == 401
        assert get(admin, "/", "s3cret-token") == 200
        assert get(admin, "/api/decisions", "s3cret-token") == 200
        assert get(admin, "/metrics") == 200
    finally:
        admin.close()


def test_on_loopback_without_a_token_the_page_is_open() -> None:
    admin = serve(None, open_without_token=True)
    try:
        assert get(admin, "/") == 200
        with urllib.request.urlopen(f"http://{LOOPBACK}:{admin.port}/api/", timeout=10) as a:
            overview = json.loads(a.read())
        assert overview["files"] == [
            {"file": "shop.yaml", "hosts": ["shop.example.com"], "rules": 1, "rate_limits": 0}
        ]
        assert get(admin, "/nothing-here") == 404
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:9", True),
        ("127.0.0.2:9", True),
        ("[::1]:9", True),
        ("localhost:9", True),
        ("0.0.0.0:9", False),
        ("[::]:9", False),
        ("10.0.0.1:9", False),
        ("admin.internal:9", False),
    ],
)
def test_what_counts_as_loopback(address: str, loopback: bool) -> None:
    assert on_loopback(address) is loopback


def test_the_token_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "from-env")
    assert read_token(None) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert read_token(str(tmp_path / "token")) == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="holds no token"):
        read_token(str(tmp_path / "empty"))
