"""The rate-limit stage: which limits count a request, the 429 and its headers, dry runs."""

from __future__ import annotations

from dataclasses import dataclass

from authz.limits import CompiledLimit, Limiter, LocalCounter, parse_key
from authz.model import Decision, EndUser, Identity, Request
from authz.policy.decide.context import RequestContext
from authz.policy.language.spec import Authentication

NOW = 1_800_000_000.0 + 17.4  # 17.4 s into a minute


@dataclass(frozen=True)
class Always:
    result: bool = True

    def matches(self, ctx: RequestContext) -> bool:
        return self.result

    def mismatch(self, ctx: RequestContext) -> str | None:
        return None if self.result else "to: paths"


ALLOW = Decision(True, 200, "cart")


def ctx(user: str | None = "alice", headers: dict[str, str] | None = None) -> RequestContext:
    identity = Identity(user=EndUser("https://id", user, {"sub": user})) if user else Identity()
    request = Request("GET", "/cart", "shop", headers=headers or {}, source_ip="10.0.0.1")
    return RequestContext(request, identity, Authentication())


def limit(
    name: str = "cart-per-user", key: str = "request_principal", **kw: object
) -> CompiledLimit:
    options: dict[str, object] = {"limit": 3, "per": 60, "dry_run": False, "matcher": Always()}
    options.update(kw)
    return CompiledLimit(name, "shop.yaml", 10, key=parse_key(key), **options)  # type: ignore[arg-type]


def run(limits: list[CompiledLimit], n: int, **kw: object) -> list[Decision]:
    limiter = Limiter(LocalCounter(), clock=lambda: NOW)
    out = []
    for _ in range(n):
        limited = limiter.apply(limits, ctx(**kw), ALLOW)  # type: ignore[arg-type]
        out.append(limited.decision if limited is not None else ALLOW)
    return out


def test_over_the_limit_is_429_named_after_the_limit_with_headers() -> None:
    limiter = Limiter(LocalCounter(), clock=lambda: NOW)
    limits = [limit()]
    for _ in range(3):
        assert limiter.apply(limits, ctx(), ALLOW) is None
    limited = limiter.apply(limits, ctx(), ALLOW)
    assert limited is not None
    assert limited.decision == Decision(False, 429, "cart-per-user")
    assert dict(limited.headers) == {
        "retry-after": "43",  # 60 - 17.4, rounded up
        "ratelimit-policy": '"cart-per-user";q=3;w=60',
        "ratelimit": '"cart-per-user";r=0;t=43',
    }


def test_keys_are_separate_and_an_absent_key_is_not_counted() -> None:
    assert [d.allowed for d in run([limit()], 5, user="bob")] == [True] * 3 + [False] * 2
    assert all(d.allowed for d in run([limit()], 10, user=None))  # no token: not counted
    header = limit(key="header:x-api-key")
    assert all(d.allowed for d in run([header], 10))
    assert [d.allowed for d in run([header], 4, headers={"x-api-key": "k1"})][-1] is False


def test_a_limit_that_does_not_match_does_not_count() -> None:
    assert all(d.allowed for d in run([limit(matcher=Always(False))], 10))


def test_dry_run_counts_and_says_would_limit_but_allows() -> None:
    decisions = run([limit(dry_run=True)], 5)
    assert all(d.allowed and d.reason == "cart" for d in decisions)
    assert [len(d.shadow) for d in decisions] == [0, 0, 0, 1, 1]
    shadow = decisions[-1].shadow[0]
    assert (shadow.rule, shadow.action, shadow.dry_run) == ("cart-per-user", "limit", True)


def test_every_matching_limit_counts_and_the_first_over_names_the_429() -> None:
    tight, loose = limit("tight", limit=1), limit("loose", key="source_ip", limit=2)
    decisions = run([loose, tight], 3)
    assert [d.reason for d in decisions] == ["cart", "tight", "loose"]


def test_a_429_reaches_envoy_with_its_headers_and_reason() -> None:
    from authz.model import Verdict
    from authz.wire.outbound import RESOURCE_EXHAUSTED, to_check_response

    limiter = Limiter(LocalCounter(), clock=lambda: NOW)
    limits = [limit(limit=1)]
    limiter.apply(limits, ctx(), ALLOW)
    limited = limiter.apply(limits, ctx(), ALLOW)
    assert limited is not None
    verdict = Verdict(limited.decision, "id-1", response_headers=limited.headers)
    response = to_check_response(verdict)
    assert response.status.code == RESOURCE_EXHAUSTED
    denied = response.denied_response
    assert denied.status.code == 429
    sent = {h.header.key: h.header.value for h in denied.headers}
    assert sent["retry-after"] == "43"
    assert sent["ratelimit-policy"] == '"cart-per-user";q=1;w=60'
    assert '"too_many_requests"' in denied.body
    assert response.dynamic_metadata.fields["reason"].string_value == "cart-per-user"
