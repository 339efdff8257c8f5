"""Issue 23.2: `authz usage` and `authz replay` on hostile decision logs, as a user runs them.

A bad line (not JSON, nested too deep, a field of the wrong type, a value no service would
write) is skipped, counted and reported with its file and line; a line over 1 MiB is skipped
without being held in memory, through gzip too; the exit status is 2 for unusable input and
never 1 (1 means "something allowed would be denied"). Memory is bounded for any input: the
peak resident set of the real command is measured on a gzip holding one 200 MiB line.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from authz.audit.records import FIELDS, record_problem
from tests.support.tokens import jwks_json, make_key

REPO = Path(__file__).resolve().parents[2]
HOST = "shop.example.com"
ISSUER = "https://id.test"
FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"

POLICY = f"""\
hosts: [{HOST}]
authentication:
  mtls: {{trust_domains: [cluster.local]}}
  jwt:
    - {{issuer: "{ISSUER}", audiences: [shop], jwks_file: jwks.json}}
rules:
  - {{name: no-admin, action: deny, to: [{{paths: ["/admin/{{**}}"]}}]}}
  - name: frontend-reads
    action: allow
    from: [{{principals: ["{FRONTEND}"], ip_blocks: [10.0.0.0/8, "::1/128"]}}]
    to: [{{methods: [GET], paths: ["/api/{{**}}"], ports: [8443]}}]
  - name: customers-cart
    action: allow
    from: [{{issuers: ["{ISSUER}"]}}]
    to: [{{methods: [POST], paths: ["/cart/{{**}}"]}}]
    when:
      - {{claim: scope, contains: cart}}
      - {{claim: realm.roles, any_of: [buyer]}}
      - {{header: x-tenant, equals: acme}}
      - {{context: tier, equals: gold}}
  - {{name: try-ops, action: allow, dry_run: true, to: [{{paths: ["/ops/{{**}}"]}}]}}
  - {{name: watch, action: audit, to: [{{paths: ["/api/{{**}}"]}}]}}
"""

BASE: dict[str, Any] = {
    "time": "2026-12-01T10:00:00.000Z",
    "decision_id": "d-1",
    "decision": "allow",
    "status": 200,
    "reason": "frontend-reads",
    "rule": "frontend-reads",
    "dry_run": [],
    "audit": ["watch"],
    "principal": FRONTEND,
    "request_principal": None,
    "method": "GET",
    "host": HOST,
    "path": "/api/orders",
    "source": "10.0.0.1",
    "request_id": "r-1",
    "policy_revision": "abc",
    "duration_ms": 0.2,
    "v": 2,
    "raw_path": "/api/orders",
    "port": 8443,
    "token": "none",
    "cert_not_after": "2027-01-01T00:00:00.000Z",
}
CART: dict[str, Any] = {
    **BASE,
    "decision_id": "d-2",
    "reason": "customers-cart",
    "rule": "customers-cart",
    "audit": [],
    "principal": None,
    "request_principal": f"{ISSUER}/alice",
    "method": "POST",
    "path": "/cart/items",
    "raw_path": "/cart/items",
    "token": "verified",
    "claims": {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "shop",
        "exp": 1_900_000_000,
        "scope": "profile cart",
        "realm.roles": ["buyer"],
    },
    "headers": {"x-tenant": "acme"},
    "context": {"tier": "gold"},
}
REJECTED: dict[str, Any] = {
    **CART,
    "decision_id": "d-3",
    "decision": "deny",
    "status": 401,
    "reason": "jwt_expired",
    "rule": None,
    "request_principal": None,
    "token": "rejected",
    "token_reason": "jwt_expired",
}
GOOD = [BASE, CART, REJECTED]

DEEP = 10_000
# Values of the right JSON type that no service writes: the audit must still not crash.
ODD_VALUES: dict[str, list[Any]] = {
    "time": ["", "yesterday", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
    "status": [-1, 0, 429, 10**40],
    "port": [-1, 0, 70000, 10**40],
    "method": ["", "get", "G\x00T", "GET " * 100],
    "host": ["", ".", "[::1]", "x" * 400, "shop.example.com.", "a..b", "\u00e9.example"],
    "path": ["", "no-slash", "/%zz", "/\x00", "/a/../../..", "/" + "a/" * 5000, "*"],
    "raw_path": ["", "/%2F", "//", "?x"],
    "source": ["", "not-an-ip", "::::", "10.0.0.1/8", "999.1.1.1", "fe80::1%eth0"],
    "principal": ["", "spiffe://", "spiffe://a/ns/b/sa/c/d", "no scheme", "spiffe://cluster.local"],
    "peer_principal": ["", "spiffe://other.domain/ns/x/sa/y"],
    "token": ["", "rejected", "verified", "unchecked", "maybe"],
    "token_reason": ["", "jwt_expired", "no_matching_rule"],
    "api_key_principal": ["", "/", "partners/acme-1", "nope"],
    "decision": ["", "allow", "deny", "maybe"],
    "rule": ["", "unknown-rule", "watch"],
    "dry_run": [[{"rule": "try-ops"}], [{"rule": ""}], [{"rule": "x", "would": "boom"}]],
    "audit": [["unknown"], [""]],
    "headers": [{"": ""}, {"x-tenant": ""}, {"X-Tenant": "acme"}],
    "context": [{"tier": ""}, {"": "gold"}],
    "claims": [
        {},
        {"iss": ISSUER},
        {"iss": [ISSUER]},
        {"iss": ISSUER, "aud": 5, "sub": {"a": 1}},
        {"iss": ISSUER, "aud": "shop", "exp": "soon", "nbf": [1]},
        {"iss": ISSUER, "aud": "shop", "exp": 10**40, "scope": 12, "realm.roles": "buyer"},
        {"iss": ISSUER, "aud": ["shop", 1, None], "scope": ["cart", {"x": 1}]},
    ],
    "cert_not_after": ["", "soon"],
}
# JSON values of every type; each field gets those not of its own type.
EVERY_TYPE: list[Any] = [12345, 1.5, True, "text", [1, 2], {"a": 1}, [["deep"]]]


def typed_wrong(name: str) -> list[Any]:
    return [
        value
        for value in EVERY_TYPE
        if record_problem({"decision": "deny", name: value}) is not None
    ]


def authz(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "shop.yaml").write_text(textwrap.dedent(POLICY), encoding="utf-8")
    (directory / "jwks.json").write_text(jwks_json(make_key("ES256")), encoding="utf-8")
    return directory


def line(record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


def commands(log: Path, policies: Path) -> dict[str, list[str]]:
    return {
        "usage": ["usage", "--decision-log", str(log), str(policies)],
        "replay": ["replay", "--decision-log", str(log), str(policies)],
    }


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]


def test_the_reported_hostile_lines_are_skipped_and_named(tmp_path: Path, policies: Path) -> None:
    log = tmp_path / "decisions.log"
    hostile = [
        b"[" * 1200 + b"]" * 1200 + b"\n",  # the 2.4 KB line that was a RecursionError
        line({**BASE, "dry_run": 12345}),
        line({**BASE, "principal": [1, 2]}),
        b"\xff\xfe not utf-8\n",
        b"\n",
        line("just a string"),
        b'{"claims": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}\n",
    ]
    log.write_bytes(b"".join([line(r) for r in GOOD] + hostile + [line(r) for r in GOOD]))
    for name, args in commands(log, policies).items():
        result = authz(*args, "--json")
        assert_no_traceback(result)
        assert result.returncode == 0, (name, result.stderr)
        report = json.loads(result.stdout)
        assert (report["lines"], report["bad_lines"]) == (13, 7)
        assert report["bad_line_examples"] == [
            f"{log}:4: JSON nested too deep",
            f"{log}:5: 'dry_run' is a number, not a list of " + '{"rule": ..., "would": ...}',
            f"{log}:6: 'principal' is a list, not a string",
            f"{log}:7: not UTF-8",
            f"{log}:8: an empty line",
        ]
        stderr = result.stderr.splitlines()
        assert stderr[0] == f"authz {name}: skipped {log}:4: JSON nested too deep"
        assert stderr[5:] == [
            f"authz {name}: 7 of 13 lines were not decision records and were skipped"
        ]
    usage = json.loads(authz(*commands(log, policies)["usage"], "--json").stdout)
    assert usage["records"] == 6
    replayed = json.loads(authz(*commands(log, policies)["replay"], "--json").stdout)
    assert replayed["flips"] == {"allow->deny": 0, "deny->allow": 0, "status": 0}
    assert replayed["replayed"] == 6


def test_every_field_of_every_type_and_odd_values_never_crash(
    tmp_path: Path, policies: Path
) -> None:
    """A generated log: each declared field of each good record set to each JSON type it does
    not have (a bad line), and to values of its type that no service writes (a record the
    audit must read without crashing, whatever it then decides)."""
    wrong: list[bytes] = []
    odd: list[bytes] = []
    for base in GOOD:
        for name in FIELDS:
            wrong += [line({**base, name: value}) for value in typed_wrong(name)]
            for value in ODD_VALUES.get(name, []):
                record = copy.deepcopy(base)
                record[name] = value
                odd.append(line(record))
    log = tmp_path / "decisions.log"
    log.write_bytes(b"".join(wrong + odd))
    for name, args in commands(log, policies).items():
        result = authz(*args, "--json")
        assert_no_traceback(result)
        assert result.returncode in (0, 1), (name, result.stderr[-2000:])
        report = json.loads(result.stdout)
        assert (report["lines"], report["bad_lines"]) == (len(wrong) + len(odd), len(wrong))
        text = authz(*args)  # the text report prints the odd values too
        assert_no_traceback(text)
        assert text.returncode == result.returncode


def test_unusable_input_exits_2_never_1(tmp_path: Path, policies: Path) -> None:
    only_bad = tmp_path / "bad.log"
    only_bad.write_bytes(line({**BASE, "status": "200"}) + b"garbage\n")
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(gzip.compress(b"".join(line(r) for r in GOOD * 200))[:-40])
    corrupt = tmp_path / "corrupt.log.gz"
    corrupt.write_bytes(b"\x1f\x8b" + os.urandom(4000))
    cases = {
        only_bad: "no decision record to read",
        cut: f"cannot read {cut}, after line ",
        corrupt: f"cannot read {corrupt}",
        tmp_path / "missing.log": f"cannot read {tmp_path / 'missing.log'}: No such file",
    }
    for log, expected in cases.items():
        for name, args in commands(log, policies).items():
            result = authz(*args)
            assert_no_traceback(result)
            assert result.returncode == 2, (name, log, result.stderr)
            assert expected in result.stderr.splitlines()[-1], result.stderr
    # An invalid candidate set is unusable input too, not "something would be denied".
    (policies / "broken.yaml").write_text("rules: [{name: x, action: alow}]\n")
    log = tmp_path / "good.log"
    log.write_bytes(b"".join(line(r) for r in GOOD))
    for args in commands(log, policies).values():
        result = authz(*args)
        assert_no_traceback(result)
        assert result.returncode == 2, result.stderr


def _gzip_with_a_huge_line(path: Path, size: int, records: list[bytes]) -> None:
    """Good records, one line of `size` bytes (a JSON string, so only its length is wrong),
    good records again: written a chunk at a time, never whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b"a" * (1 << 20)
    with path.open("wb") as out:
        out.write(compressor.compress(b"".join(records) + b'{"x": "'))
        for _ in range(size // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(b'"}\n' + b"".join(records)))
        out.write(compressor.flush())


def peak_rss_mib(args: list[str]) -> tuple[int, float, str]:
    """Run `authz ARGS` and return its exit code, its own peak resident set (MiB) and stderr:
    wait4 gives this child's rusage alone."""
    with open(os.devnull, "wb") as null:
        process = subprocess.Popen(
            [sys.executable, "-m", "authz", *args],
            cwd=REPO,
            stdout=null,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, stderr


def test_a_gzip_bomb_line_is_skipped_in_bounded_memory(tmp_path: Path, policies: Path) -> None:
    records = [line(r) for r in GOOD]
    bomb = tmp_path / "bomb.log.gz"
    _gzip_with_a_huge_line(bomb, 200 << 20, records)
    assert bomb.stat().st_size < 1 << 20  # the issue's probe: a small file, a 200 MiB line
    small = tmp_path / "small.log.gz"
    small.write_bytes(gzip.compress(b"".join(records * 2)))
    for name, args in commands(bomb, policies).items():
        code, peak, stderr = peak_rss_mib(args)
        _, baseline, _ = peak_rss_mib(commands(small, policies)[name])
        assert code == 0, stderr
        assert f"authz {name}: skipped {bomb}:4: longer than 1048576 bytes" in stderr
        assert f"authz {name}: 1 of 7 lines were not decision records" in stderr
        # Held whole, the line alone would be 200 MiB (and several times that parsed); read in
        # 1 MiB pieces it costs a few MiB over the same command on a small log.
        assert peak - baseline < 32, (name, peak, baseline)


def test_many_distinct_long_values_keep_memory_bounded(tmp_path: Path, policies: Path) -> None:
    """Every value a log chooses is new and long (principals, rules, reasons, methods, paths,
    sources, certificate times): counters keep 1,000 keys cut to 512 characters, replay keeps
    1,000 groups per kind with examples cut as well, so memory does not follow the input."""
    count, width = 1200, 20_000
    log = tmp_path / "distinct.log.gz"
    with gzip.open(log, "wb", compresslevel=1) as out:
        for i in range(count):
            unique = f"{i:06d}" + "x" * width
            record = {
                **BASE,
                "principal": f"spiffe://cluster.local/ns/{unique}/sa/a",
                "method": f"GET{unique}",
                "path": f"/api/{unique}",
                "raw_path": f"/api/{unique}",
                "source": unique,
                "cert_not_after": unique,
            }
            if i % 3 == 1:
                record["rule"] = record["reason"] = f"rule-{unique}"
            elif i % 3 == 2:
                record.update(decision="deny", status=401, rule=None, reason=f"why-{unique}")
            out.write(line(record))
    small = tmp_path / "small.log.gz"
    small.write_bytes(gzip.compress(b"".join(line(r) for r in GOOD)))
    for name, args in commands(log, policies).items():
        code, peak, stderr = peak_rss_mib([*args, "--json"])
        _, baseline, _ = peak_rss_mib([*commands(small, policies)[name], "--json"])
        assert code in (0, 1), stderr  # replay: the made-up allows would now be denied
        assert "Traceback" not in stderr
        # Kept whole, the keys took 340 MiB (1,500 lines of 30 KB values, before the cut).
        assert peak - baseline < 64, (name, peak, baseline)
