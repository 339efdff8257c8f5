"""usage and replay on decision logs written by the real service process.

`python -m authz serve --decision-log FILE` decides real Check calls (workloads, real tokens
signed by a test key, a peer certificate, refused tokens and paths); then `python -m authz
usage` and `python -m authz replay` read that log, as an operator runs them, and the reports
are compared exactly.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.support.certs import CertAuthority
from tests.support.ports import free_port
from tests.support.service import ServiceProcess
from tests.support.tokens import claims, jwks_json, make_key, tamper

REPO = Path(__file__).resolve().parents[2]
HOST = "shop.example.com"
ISSUER = "https://id.test"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
OPS = "spiffe://cluster.local/ns/ops/sa/console"

POLICY = """\
hosts: [{host}]
authentication:
  mtls: {{trust_domains: [cluster.local]}}
  jwt:
    - {{issuer: "{issuer}", audiences: [shop], jwks_file: {jwks}}}
rules:
  - name: no-admin
    action: deny
    to: [{{paths: ["/admin/{{**}}"]}}]
  - name: frontend-reads
    action: allow
    from: [{{principals: ["{frontend}"]}}]
    to: [{{methods: [GET, HEAD, DELETE], paths: ["/api/{{**}}"]}}]
  - name: customers-cart
    action: allow
    from: [{{issuers: ["{issuer}"]}}]
    to: [{{methods: [POST], paths: ["/cart/{{**}}"]}}]
    when:
      - {{claim: scope, contains: cart}}
      - {{header: x-tenant, equals: acme}}
  - name: try-ops
    action: allow
    dry_run: true
    from: [{{namespaces: [ops]}}]
    to: [{{paths: ["/ops/{{**}}"]}}]
  - name: never-used
    action: allow
    to: [{{paths: [/never]}}]
"""


def authz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def check_request(
    method: str,
    path: str,
    *,
    principal: str = "",
    headers: dict[str, str] | None = None,
    source: str = "10.0.0.1",
    certificate: str = "",
) -> bytes:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path = method, HOST, path
    for name, value in {
        ":method": method,
        ":authority": HOST,
        ":path": path,
        **(headers or {}),
    }.items():
        http.headers[name] = value
    message.attributes.source.address.socket_address.address = source
    message.attributes.source.principal = principal
    message.attributes.source.certificate = certificate
    message.attributes.destination.address.socket_address.port_value = 8443
    return message.SerializeToString()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The policy directory and the decision log the real process wrote for 10 checks."""
    tmp = tmp_path_factory.mktemp("audit")
    key = make_key("ES256")
    jwks = tmp / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(
        POLICY.format(host=HOST, issuer=ISSUER, jwks=jwks, frontend=FRONTEND), encoding="utf-8"
    )
    cert = CertAuthority("mesh").issue(tmp, "frontend", common_name="f", uri_sans=[FRONTEND])
    pem = urllib.parse.quote(cert.cert.read_text(), safe="")
    cart = key.sign(claims(ISSUER, now=time.time(), audience="shop", scope="profile cart"))
    log = tmp / "decisions.log"
    requests = [
        check_request("GET", "/api/orders/1", principal=FRONTEND, certificate=pem),
        check_request("GET", "/api/orders/2", principal=FRONTEND),
        check_request("GET", "/api/orders?page=2", principal=FRONTEND),
        check_request("GET", "/admin/users", principal=FRONTEND),
        check_request(
            "POST", "/cart/items", headers={"authorization": f"Bearer {cart}", "x-tenant": "acme"}
        ),
        check_request(
            "POST",
            "/cart/items",
            headers={"authorization": f"Bearer {cart}", "x-tenant": "umbrella"},
        ),
        check_request(
            "POST",
            "/cart/items",
            headers={"authorization": f"Bearer {tamper(cart)}", "x-tenant": "acme"},
            source="10.0.0.66",
        ),
        check_request("GET", "/api/a%2Fb", principal=FRONTEND, source="10.0.0.66"),
        check_request("GET", "/ops/stats", principal=OPS),
        check_request("GET", "/ops/stats", principal=OPS),
    ]
    admin = f"127.0.0.1:{free_port()}"
    args = ("--decision-log", str(log), "--admin", admin)
    with ServiceProcess(policies, extra_args=args) as service:
        for data in requests:
            service.check_bytes(data)
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
            (tmp / "metrics.txt").write_bytes(response.read())
        assert service.terminate() == 0  # the log is complete once the process has exited
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == len(requests)
    return policies, log, records


def test_the_log_holds_what_replay_needs(logged: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, _, records = logged
    first, cart_ok, bad_token, bad_path = records[0], records[4], records[6], records[7]
    assert first["v"] == 2 and first["port"] == 8443 and first["raw_path"] == "/api/orders/1"
    assert first["cert_not_after"].endswith("Z") and "cert_not_after" not in records[1]
    assert records[2]["raw_path"] == "/api/orders"  # never the query string
    assert cart_ok["token"] == "verified"
    assert cart_ok["claims"] == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "shop",
        "scope": "profile cart",
    }
    assert cart_ok["headers"] == {"x-tenant": "acme"}
    assert (bad_token["token"], bad_token["token_reason"]) == ("rejected", "jwt_bad_signature")
    assert (bad_path["reason"], bad_path["source"], bad_path["method"]) == (
        "invalid_path",
        "10.0.0.66",
        None,
    )
    for record in records:
        assert "Bearer" not in json.dumps(record)


def test_the_soonest_certificate_expiry_is_a_metric(
    logged: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    policies, _, records = logged
    from datetime import datetime

    from prometheus_client.parser import text_string_to_metric_families

    text = (policies.parent / "metrics.txt").read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    want = datetime.fromisoformat(records[0]["cert_not_after"]).timestamp()
    key = (
        "authz_peer_certificate_expiry_soonest_timestamp_seconds",
        (("trust_domain", "cluster.local"),),
    )
    assert samples[key] == want


USAGE_TEXT = """\
10 requests against policy revision {rev}
allow rules:
  frontend-reads (shop.yaml:10): allows /api/{{**}} for GET, HEAD, DELETE; used: GET /api/orders/{{*}} (2), GET /api/orders (1); never used: HEAD, DELETE
      principals: spiffe://cluster.local/ns/shop/sa/frontend (3)
  customers-cart (shop.yaml:14): allows /cart/{{**}} for POST; used: POST /cart/items (1)
      request principals: https://id.test/alice (1)
  never-used (shop.yaml:26): allows /never for any method; never used
rules never matched: never-used (shop.yaml:26)
rules matched only in dry-run: try-ops (2)
top denied principals: anonymous 10.0.0.66 (2), spiffe://cluster.local/ns/ops/sa/console (2), https://id.test/alice (1), spiffe://cluster.local/ns/shop/sa/frontend (1)
top deny reasons: no_matching_rule (3), invalid_path (1), jwt_bad_signature (1), no-admin (1)
invalid tokens by source: 10.0.0.66 (1)
invalid token reasons: jwt_bad_signature (1)
invalid paths by source: 10.0.0.66 (1)
"""  # noqa: E501


def test_usage_reports_exactly(logged: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    policies, log, records = logged
    rev = records[0]["policy_revision"]
    text = authz("usage", "--decision-log", str(log), str(policies))
    assert text.returncode == 0, text.stderr
    assert text.stdout.replace(str(policies / "shop.yaml"), "shop.yaml") == USAGE_TEXT.format(
        rev=rev
    )

    result = authz(
        "usage", "--decision-log", str(log), str(policies), "--json", "--cert-expiry-days", "30"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["frontend-reads"]["used"] == {"GET /api/orders/{*}": 2, "GET /api/orders": 1}
    assert rules["frontend-reads"]["principals"] == {FRONTEND: 3}
    assert rules["customers-cart"]["request_principals"] == {f"{ISSUER}/alice": 1}
    assert (report["never_matched"], report["only_dry_run"]) == (["never-used"], ["try-ops"])
    assert report["invalid_tokens_by_source"] == {"10.0.0.66": 1}
    assert report["invalid_paths_by_source"] == {"10.0.0.66": 1}
    assert report["certificates_expiring"] == [
        {"principal": FRONTEND, "not_after": records[0]["cert_not_after"]}
    ]
    # The test certificate lives 10 days: not within 5.
    five = authz(
        "usage", "--decision-log", str(log), str(policies), "--json", "--cert-expiry-days", "5"
    )
    assert json.loads(five.stdout)["certificates_expiring"] == []


def test_usage_reads_rotated_gzip_logs_and_time_windows(
    logged: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    policies, log, records = logged
    lines = log.read_text().splitlines(keepends=True)
    old = tmp_path / "decisions.log.1.gz"
    with gzip.open(old, "wt") as fh:
        fh.writelines(lines[:5])
    new = tmp_path / "decisions.log"
    new.write_text("".join(lines[5:]) + '{"torn": tru\n')
    split = authz(
        "usage", "--decision-log", str(old), "--decision-log", str(new), str(policies), "--json"
    )
    whole = authz("usage", "--decision-log", str(log), str(policies), "--json")
    a, b = json.loads(split.stdout), json.loads(whole.stdout)
    assert (a.pop("lines"), a.pop("bad_lines")) == (11, 1)
    assert a.pop("bad_line_examples") == [
        f"{new}:6: not JSON (Expecting value: line 1 column 10 (char 9))"
    ]
    b.pop("lines"), b.pop("bad_lines"), b.pop("bad_line_examples")
    assert a == b

    since = records[4]["time"]
    windowed = authz("usage", "--decision-log", str(log), str(policies), "--json", "--since", since)
    report = json.loads(windowed.stdout)
    expected = sum(1 for r in records if r["time"] >= since)
    assert (report["records"], report["outside_time"]) == (expected, 10 - expected)


def candidate(policies: Path, tmp_path: Path, old: str, new: str) -> Path:
    target = tmp_path / "candidate"
    shutil.copytree(policies, target)
    shop = target / "shop.yaml"
    text = shop.read_text()
    assert old in text
    shop.write_text(text.replace(old, new))
    return target


def test_replay_of_the_same_policy_flips_nothing(
    logged: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    policies, log, _ = logged
    result = authz("replay", "--decision-log", str(log), str(policies), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["flips"] == {"allow->deny": 0, "deny->allow": 0, "status": 0}
    assert (report["replayed"], report["not_replayable"]) == (9, 1)  # the refused path


def test_replay_without_an_allow_rule_flips_what_it_allowed(
    logged: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    policies, log, records = logged
    cand = candidate(
        policies, tmp_path, "name: frontend-reads", "name: frontend-reads\n    dry_run: true"
    )
    result = authz("replay", "--decision-log", str(log), str(cand), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["flips"] == {"allow->deny": 3, "deny->allow": 0, "status": 0}
    [group] = report["groups"]
    assert (group["kind"], group["rule"], group["count"]) == ("allow->deny", "frontend-reads", 3)
    assert [e["decision_id"] for e in group["examples"]] == [r["decision_id"] for r in records[:3]]
    assert group["examples"][0]["now"] == "deny 403 no_matching_rule"
    assert authz("replay", "--decision-log", str(log), str(cand), "--allow-flips").returncode == 0

    text = authz("replay", "--decision-log", str(log), str(cand)).stdout
    assert "flips: 3 allow->deny, 0 deny->allow, 0 status changes" in text
    assert "allow->deny, was allowed by frontend-reads: 3\n" in text
    assert (
        f"GET {HOST}/api/orders/1 as {FRONTEND}: was allow 200 frontend-reads, now deny 403" in text
    )


def test_replay_uses_the_logged_headers_and_claims(
    logged: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    policies, log, records = logged
    cand = candidate(policies, tmp_path, "equals: acme", "equals: umbrella")
    result = authz("replay", "--decision-log", str(log), str(cand), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["flips"] == {"allow->deny": 1, "deny->allow": 1, "status": 0}
    ids = {g["kind"]: [e["decision_id"] for e in g["examples"]] for g in report["groups"]}
    assert ids == {
        "allow->deny": [records[4]["decision_id"]],
        "deny->allow": [records[5]["decision_id"]],
    }
    # A claim condition the verified token does not meet: its allow flips.
    cand2 = candidate(policies, tmp_path / "2", "contains: cart", "contains: admin")
    report2 = json.loads(authz("replay", "--decision-log", str(log), str(cand2), "--json").stdout)
    assert report2["flips"] == {"allow->deny": 1, "deny->allow": 0, "status": 0}
    # Without both conditions the umbrella request flips; the tampered token stays rejected.
    cand3 = candidate(
        policies,
        tmp_path / "3",
        "    when:\n      - {claim: scope, contains: cart}\n"
        "      - {header: x-tenant, equals: acme}\n",
        "",
    )
    report3 = json.loads(authz("replay", "--decision-log", str(log), str(cand3), "--json").stdout)
    assert report3["flips"] == {"allow->deny": 0, "deny->allow": 1, "status": 0}
    assert report3["groups"][0]["examples"][0]["decision_id"] == records[5]["decision_id"]
