"""Differential test: Envoy's own `jwt_authn` filter and this service judge the same tokens.

One token matrix, two real Envoys on loopback, every token sent through both:

(A) Envoy with `jwt_authn` (one provider: issuer, audiences, the JWKS inline, `Authorization:
    Bearer`, `forward: true`, clock skew 60 s, required on every route) and ext_authz switched
    off (`filter_enabled` 0 %), so the verdict is Envoy's alone; checked at the end by the
    ext_authz cluster having seen no request. Accept = the upstream answered 200.
(B) Envoy without `jwt_authn`, ext_authz to our service (as a process) whose policy declares the
    same provider (same issuer and audiences, `jwks_file` holding the same JWKS) and one rule
    allowing requests from that issuer. Accept = 200.

Both must agree on accept or reject, token by token. Where they differ by documented design,
the row says so (`expect_envoy` / `expect_ours` and `why`) and that exact difference is
asserted, so it can neither disappear nor spread unnoticed. Rejections by our service must be
401 (docs/policy.md: a token that is present but fails is answered 401); Envoy answers 401, or 403
for an audience mismatch (its own choice), both count as reject.

Tokens are minted when the test runs (not at collection), so the "within the skew" rows keep a
30 s margin on either side of the 60 s skew whatever ran before; no timing is asserted.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import https
from tests.support.envoy import Envoy, EnvoyConfig
from tests.support.tokens import (
    ASYMMETRIC_ALGORITHMS,
    SigningKey,
    claims,
    hmac_confusion_token,
    jwks_json,
    make_key,
    tamper,
    unsigned_token,
)
from tests.support.upstream import EchoUpstream

try:
    from tests.support.service import ServiceProcess
except ImportError:  # not moved yet
    from tests.hostile.service import ServiceProcess  # type: ignore[no-redef, unused-ignore]

pytestmark = pytest.mark.e2e

ISSUER = "https://id.differential.example"
AUDIENCE = "diff-api"
SKEW = 60
PATH = "/api/things/1"

ACCEPT, REJECT = "accept", "reject"


@dataclass(frozen=True)
class Row:
    """One token of the matrix and what each side is expected to do with it."""

    name: str
    make: Callable[[dict[str, SigningKey], float], str | None]  # None: send no token
    expect_envoy: str
    expect_ours: str
    why: str = ""  # required when the two expectations differ

    @property
    def differs(self) -> bool:
        return self.expect_envoy != self.expect_ours


def _payload(now: float, **changes: Any) -> dict[str, Any]:
    return claims(ISSUER, now=now, audience=AUDIENCE, **changes)


def _valid(alg: str) -> Row:
    return Row(f"valid {alg}", lambda k, now: k[alg].sign(_payload(now)), ACCEPT, ACCEPT)


Maker = Callable[[dict[str, SigningKey], float], "str | None"]


def _same(name: str, make: Maker, verdict: str) -> Row:
    return Row(name, make, verdict, verdict)


def _without(claim: str) -> Callable[[dict[str, SigningKey], float], str]:
    def make(k: dict[str, SigningKey], now: float) -> str:
        payload = _payload(now)
        del payload[claim]
        return k["ES256"].sign(payload)

    return make


# A fresh key that is in no JWKS, with a kid nobody published.
_STRANGER = make_key("ES256", kid="kid-nobody-published")

MATRIX: tuple[Row, ...] = (
    *(_valid(alg) for alg in ASYMMETRIC_ALGORITHMS),
    _same("no token (rule needs a JWT)", lambda k, now: None, REJECT),
    _same(
        "expired beyond skew (exp = now-180)",
        lambda k, now: k["RS256"].sign(_payload(now - 600, lifetime=420)),
        REJECT,
    ),
    _same(
        "expired within skew (exp = now-30)",
        lambda k, now: k["RS256"].sign(_payload(now - 600, lifetime=570)),
        ACCEPT,
    ),
    _same(
        "nbf beyond skew (nbf = now+180)",
        lambda k, now: k["ES256"].sign(_payload(now, not_before=now + 180)),
        REJECT,
    ),
    _same(
        "nbf within skew (nbf = now+30)",
        lambda k, now: k["ES256"].sign(_payload(now, not_before=now + 30)),
        ACCEPT,
    ),
    _same(
        "wrong aud",
        lambda k, now: k["RS256"].sign(claims(ISSUER, now=now, audience="someone-else")),
        REJECT,
    ),
    _same(
        "aud list containing ours",
        lambda k, now: k["RS256"].sign(
            claims(ISSUER, now=now, audience=["someone-else", AUDIENCE])
        ),
        ACCEPT,
    ),
    _same("no aud (audiences configured)", _without("aud"), REJECT),
    _same(
        "wrong iss",
        lambda k, now: k["RS256"].sign(claims("https://evil.example", now=now, audience=AUDIENCE)),
        REJECT,
    ),
    _same(
        "bad signature (payload tampered)",
        lambda k, now: tamper(k["RS256"].sign(_payload(now))),
        REJECT,
    ),
    _same(
        "bad signature (EdDSA, tampered)",
        lambda k, now: tamper(k["EdDSA"].sign(_payload(now))),
        REJECT,
    ),
    _same("alg none", lambda k, now: unsigned_token(_payload(now), kid=k["RS256"].kid), REJECT),
    _same(
        "HS256 signed with the RSA public key",
        lambda k, now: hmac_confusion_token(k["RS256"], _payload(now)),
        REJECT,
    ),
    _same("unknown kid (key not in JWKS)", lambda k, now: _STRANGER.sign(_payload(now)), REJECT),
    _same(
        "known kid, other key's signature",
        lambda k, now: _STRANGER.sign(_payload(now), kid=k["ES256"].kid),
        REJECT,
    ),
    _same("garbage", lambda k, now: "this-is-not-a-jwt", REJECT),
    _same("garbage, three segments", lambda k, now: "Zm9v.YmFy.YmF6", REJECT),
    _same("no exp", _without("exp"), ACCEPT),
    Row(
        "no sub",
        _without("sub"),
        ACCEPT,
        REJECT,
        why="ours refuses tokens without sub: the request principal <iss>/<sub> would be "
        "ambiguous (README 'How tokens are judged'; authz/identity/jwt.py); "
        "jwt_authn does not require sub",
    ),
    Row(
        "no kid, several keys in the JWKS",
        lambda k, now: k["ES256"].sign(_payload(now), kid=False),
        ACCEPT,
        REJECT,
        why="ours picks the key by kid and, without one, only when the JWKS has a single key "
        "(authz/identity/jwks.py KeySet.find: no safe choice among several); jwt_authn "
        "tries every key that fits the alg",
    ),
)


# -- the two paths ---------------------------------------------------------------------------


@dataclass
class Paths:
    envoy_jwt_authn: Envoy  # (A)
    envoy_ext_authz: Envoy  # (B)
    service: ServiceProcess
    keys: dict[str, SigningKey]


def _policy(jwks_file: str) -> str:
    return (
        "authentication:\n"
        "  jwt:\n"
        f"    - issuer: {json.dumps(ISSUER)}\n"
        f"      audiences: [{json.dumps(AUDIENCE)}]\n"
        f"      jwks_file: {json.dumps(jwks_file)}\n"
        "      forward: true\n"
        "rules:\n"
        "  - name: users-of-the-issuer\n"
        "    action: allow\n"
        f"    from: [{{issuers: [{json.dumps(ISSUER)}]}}]\n"
        '    to: [{paths: ["/{**}"]}]\n'
    )


def _jwt_authn(jwks: str) -> dict[str, Any]:
    return {
        "providers": {
            "diff": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "local_jwks": {"inline_string": jwks},
                "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
                "forward": True,
                "clock_skew_seconds": SKEW,
            }
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "diff"}}],
    }


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    keys = {alg: make_key(alg, kid=f"diff-{alg.lower()}") for alg in ASYMMETRIC_ALGORITHMS}
    document = jwks_json(*keys.values())
    work = tmp_path_factory.mktemp("jwt-differential")
    policies = work / "policies"
    policies.mkdir()
    (policies / "jwks.json").write_text(document)
    (policies / "differential.yaml").write_text(_policy("jwks.json"))

    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(EchoUpstream())
        service = stack.enter_context(ServiceProcess(policies))
        common: dict[str, Any] = {"upstream_host": upstream.host, "upstream_port": upstream.port}
        envoy_a = stack.enter_context(
            Envoy(
                EnvoyConfig(
                    authz_address=service.address,
                    jwt_authn=_jwt_authn(document),
                    # ext_authz off for every request: path A is jwt_authn's verdict alone.
                    ext_authz_overrides={
                        "filter_enabled": {
                            "default_value": {"numerator": 0, "denominator": "HUNDRED"}
                        }
                    },
                    **common,
                ),
                Path(work / "envoy-jwt-authn"),
            )
        )
        envoy_b = stack.enter_context(
            Envoy(
                EnvoyConfig(authz_address=service.address, **common), Path(work / "envoy-ext-authz")
            )
        )
        yield Paths(envoy_a, envoy_b, service, keys)


def _verdict(envoy: Envoy, token: str | None) -> tuple[str, int, str]:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    answer = https.request(envoy.url, PATH, headers=headers)
    detail = answer.header("www-authenticate") or answer.text[:80]
    if answer.status == 200:
        return ACCEPT, 200, ""
    if answer.status in (401, 403):
        return REJECT, answer.status, detail.strip()
    return f"error {answer.status}", answer.status, answer.text[:200]


def test_jwt_authn_and_service_agree_token_by_token(paths: Paths) -> None:
    assert len({row.name for row in MATRIX}) == len(MATRIX)
    for row in MATRIX:
        assert not row.differs or row.why, f"{row.name}: a difference needs its reason"

    now = time.time()
    results = []
    problems = []
    for row in MATRIX:
        token = row.make(paths.keys, now)
        envoy, envoy_status, envoy_detail = _verdict(paths.envoy_jwt_authn, token)
        ours, our_status, our_detail = _verdict(paths.envoy_ext_authz, token)
        results.append((row, envoy, envoy_status, ours, our_status))
        if envoy != row.expect_envoy:
            problems.append(
                f"{row.name}: jwt_authn {envoy} ({envoy_status} {envoy_detail}), "
                f"expected {row.expect_envoy}"
            )
        if ours != row.expect_ours:
            problems.append(
                f"{row.name}: ours {ours} ({our_status} {our_detail}), expected {row.expect_ours}"
            )
        if ours == REJECT and our_status != 401:
            problems.append(f"{row.name}: ours rejected with {our_status}, docs/policy.md says 401")

    width = max(len(row.name) for row in MATRIX)
    lines = [f"{'token':<{width}}  {'jwt_authn':<14} {'ours':<14} note"]
    for row, envoy, envoy_status, ours, our_status in results:
        if envoy == ours:
            note = "agree"
        else:
            note = f"EXPECTED DIFFERENCE: {row.why}" if row.differs else "MISMATCH"
        lines.append(
            f"{row.name:<{width}}  {envoy + f' {envoy_status}':<14} "
            f"{ours + f' {our_status}':<14} {note}"
        )
    agreed = sum(1 for _, e, _, o, _ in results if e == o)
    lines.append(
        f"{len(results)} tokens: {agreed} agree, "
        f"{sum(row.differs for row in MATRIX)} documented differences, "
        f"{len(problems)} problems"
    )
    summary = "\n".join(lines)
    print("\n" + summary)

    # Path A really was jwt_authn alone: ext_authz never called; path B asked our service
    # about every token.
    total = "cluster.ext_authz.upstream_rq_total"
    assert paths.envoy_jwt_authn.stats(total)[total] == 0
    assert paths.envoy_ext_authz.stats(total)[total] == len(MATRIX)

    assert not problems, (
        "\n".join(problems)
        + "\n\n"
        + summary
        + f"\n\n(A) {paths.envoy_jwt_authn.describe()}\n\n(B) {paths.envoy_ext_authz.describe()}"
        + f"\n\nservice log:\n{paths.service.log()[-3000:]}"
    )
