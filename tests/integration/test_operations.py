"""Operations in the real process: decision log, metrics and readiness over real gRPC and HTTP.

`python -m authz serve` runs with --admin and --decision-log on loopback ports; the test sends
real Check calls, then scrapes /metrics, asks /readyz and reads the decision log. Every wait is
bounded polling; the process is always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from tests.support.ports import free_port_runs
from tests.support.tokens import claims, jwks_json, make_key, tamper

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "shop.example.com"
ISSUER = "https://id.test"
BOUND = 30.0  # seconds for anything to show: start-up, a log line, a counter


def write_policies(directory: Path, jwks_file: Path) -> None:
    directory.mkdir()
    (directory / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        hosts: [{HOST}]
        authentication:
          jwt:
            - issuer: {ISSUER}
              audiences: [shop]
              jwks_file: {jwks_file}
        rules:
          - name: no-admin
            action: deny
            to: [{{paths: [/admin, "/admin/{{**}}"]}}]
          - name: public
            action: allow
            to: [{{methods: [GET], paths: ["/public/{{**}}"]}}]
          - name: users
            action: allow
            from: [{{issuers: ["{ISSUER}"]}}]
            to: [{{paths: ["/api/{{**}}"]}}]
          - name: watch-api
            action: audit
            to: [{{paths: ["/api/{{**}}"]}}]
          - name: try-ops
            action: allow
            dry_run: true
            to: [{{paths: ["/public/{{**}}"]}}]
        """),
        encoding="utf-8",
    )


class Service:
    """The service process with its gRPC and admin ports."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.log_path, self.env = args, log, env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_port = self.admin_port = 0

    @classmethod
    def on_loopback(cls, policies: Path, log: Path, *extra: str) -> Service:
        """`authz serve --policies POLICIES` on free loopback gRPC and admin ports, with `extra`
        args (not started)."""
        ports = ["--listen", "127.0.0.1:{grpc}", "--admin", "127.0.0.1:{admin}"]
        return cls(["--policies", str(policies), *ports, *extra], log)

    def start(self) -> Service:
        last = ""
        # Worker i of `--workers N` listens on port + i: pick runs of N free ports.
        args = self.args
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        for _ in range(3):  # free ports are racy: retry when one was taken meanwhile
            self.grpc_port, self.admin_port = free_port_runs(workers, 2)
            self.process = self.launch()
            try:
                self.wait_ready()
                return self
            except RuntimeError as error:
                last = str(error)
                self.stop()
                if "in use" not in last:
                    break
        raise RuntimeError(f"the service did not become ready: {last}")

    def launch(self) -> subprocess.Popen[bytes]:
        """Start `authz serve` on the ports just picked (`{grpc}`, `{admin}` in the args)."""
        args = [a.format(grpc=self.grpc_port, admin=self.admin_port) for a in self.args]
        return subprocess.Popen(
            [sys.executable, "-m", "authz", "serve", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited {self.process.returncode}: {self.stderr()[-2000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"/readyz not 200 after {BOUND}s: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}{path}", timeout=5
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def check(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        host: str = HOST,
        method: str = "GET",
    ) -> Any:
        message = external_auth_pb2.CheckRequest()
        http = message.attributes.request.http
        http.method, http.host, http.path, http.id = method, host, path, "req-it"
        for name, value in {
            ":method": method,
            ":authority": host,
            ":path": path,
            **(headers or {}),
        }.items():
            http.headers[name] = value
        message.attributes.source.address.socket_address.address = "10.9.8.7"
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            return stub.Check(message, timeout=10)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def status_of(response: Any) -> int:
    if response.status.code == 0:
        return 200
    return int(response.denied_response.status.code) or 403


def wait_for_lines(path: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + BOUND
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{len(lines)} decision log lines after {BOUND}s, expected {count}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path, Any]]:
    key = make_key("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(key), encoding="utf-8")
    policies = tmp_path / "policies"
    write_policies(policies, jwks)
    yield tmp_path, policies, key


def test_checks_show_in_metrics_readiness_and_the_decision_log(
    setup: tuple[Path, Path, Any],
) -> None:
    tmp_path, policies, key = setup
    log = tmp_path / "decisions.log"
    token = key.sign(claims(ISSUER, now=time.time(), audience="shop"))
    bad_token = tamper(
        key.sign(claims(ISSUER, now=time.time(), audience="shop", subject="mallory"))
    )
    cookie_secret = "session=cookie-secret-4711"
    query_secret = "query-secret-0815"
    service = Service.on_loopback(
        policies,
        tmp_path / "stderr.log",
        "--decision-log",
        str(log),
        "--log-header",
        "x-trace",
        "--log-header",
        "authorization",
        "--log-header",
        "cookie",
        "--no-watch",
    )
    service.start()
    try:
        assert service.get("/healthz")[0] == 200
        assert json.loads(service.get("/readyz")[1]) == {
            "ready": True,
            "phase": "serving",
            "rate_limits": {"store": "memory", "state": "local"},
        }

        secrets = {
            "authorization": f"Bearer {token}",
            "cookie": cookie_secret,
            "x-trace": "trace-1",
        }
        answers = [
            service.check("/public/a", {"x-trace": "trace-0"}),
            service.check("/admin/x", secrets),
            service.check("/api/orders", secrets),
            service.check(
                "/api/orders", {"authorization": f"Bearer {bad_token}", "cookie": cookie_secret}
            ),
            service.check(f"/api/orders?access_token={query_secret}"),
            service.check("/public/a", host="elsewhere.example.com"),
        ]
        assert [status_of(a) for a in answers] == [200, 403, 200, 401, 401, 403]

        records = wait_for_lines(log, len(answers))
        by_path = [(r["decision"], r["reason"], r["status"]) for r in records]
        assert by_path[:3] == [
            ("allow", "public", 200),
            ("deny", "no-admin", 403),
            ("allow", "users", 200),
        ]
        # a rejected token: 401 with a jwt_* reason code (jwt_bad_signature for a tampered one)
        assert by_path[3][0] == "deny" and by_path[3][1].startswith("jwt_") and by_path[3][2] == 401
        token_reason = by_path[3][1]
        assert by_path[4] == ("deny", "no_matching_rule", 401)
        assert by_path[5] == ("deny", "no_policy_for_host", 403)

        public, admin, user = records[0], records[1], records[2]
        assert (
            public["dry_run"] == [{"rule": "try-ops", "would": "allow"}] and public["audit"] == []
        )
        assert public["headers"] == {"x-trace": "trace-0"}
        assert user["audit"] == ["watch-api"] and user["rule"] == "users"
        assert user["request_principal"] == f"{ISSUER}/alice"
        assert user["headers"] == {"x-trace": "trace-1"}  # authorization and cookie never shown
        assert (user["method"], user["host"], user["path"], user["source"]) == (
            "GET",
            HOST,
            "/api/orders",
            "10.9.8.7",
        )
        assert records[4]["path"] == "/api/orders"
        assert all(r["policy_revision"] for r in records)
        assert all(
            isinstance(r["duration_ms"], (int, float)) and r["duration_ms"] >= 0 for r in records
        )
        assert all(r["time"].endswith("Z") and "T" in r["time"] for r in records)
        assert len({r["decision_id"] for r in records}) == len(records)
        assert admin["decision_id"] != user["decision_id"]

        text = log.read_text(encoding="utf-8")
        for secret in (token, bad_token, "cookie-secret-4711", query_secret):
            assert secret not in text

        m = service.metrics()
        # Rule names are in the decision log only; the metric says a rule decided.
        for decision, reason, count in [
            ("allow", "rule", 2),
            ("deny", "rule", 1),
            ("deny", token_reason, 1),
            ("deny", "no_matching_rule", 1),
            ("deny", "no_policy_for_host", 1),
        ]:
            assert m[("authz_checks_total", (("decision", decision), ("reason", reason)))] == count
        assert m[("authz_check_duration_seconds_count", (("decision", "allow"),))] == 2
        assert m[("authz_check_duration_seconds_count", (("decision", "deny"),))] == 4
        assert m[("authz_policy_rules", ())] == 5
        assert m[("authz_jwks_fetches_total", (("issuer", ISSUER), ("result", "ok")))] >= 1
        assert m[("authz_decision_log_dropped_total", ())] == 0
        assert m[("authz_policy_reloads_total", (("result", "ok"),))] == 0
        revision = records[0]["policy_revision"]
        assert m[("authz_policy_info", (("revision", revision),))] == 1

        # SIGHUP reloads (same files: same revision, counted ok)
        assert service.process is not None
        service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + BOUND
        while service.metrics()[("authz_policy_reloads_total", (("result", "ok"),))] < 1:
            assert time.monotonic() < deadline, "the reload was never counted"
            time.sleep(0.05)
    finally:
        code = service.stop()
    assert code == 0, service.stderr()[-2000:]
    assert len(log.read_text(encoding="utf-8").splitlines()) == 6


def test_config_file_and_environment_start_the_service(setup: tuple[Path, Path, Any]) -> None:
    tmp_path, policies, _ = setup
    config = tmp_path / "authz.yaml"
    config.write_text(
        textwrap.dedent("""\
        listen: ["127.0.0.1:{grpc}"]
        admin: "127.0.0.1:{admin}"
        decision_log: decisions.log
        watch: false
        """),
        encoding="utf-8",
    )
    # The config file itself is written per attempt (its ports change), so the template is
    # rendered by a small wrapper: `--config` names the rendered copy.
    rendered = tmp_path / "rendered.yaml"

    class ConfigService(Service):
        def launch(self) -> subprocess.Popen[bytes]:
            rendered.write_text(
                config.read_text()
                .replace("{grpc}", str(self.grpc_port))
                .replace("{admin}", str(self.admin_port)),
                encoding="utf-8",
            )
            return subprocess.Popen(
                [sys.executable, "-m", "authz", "serve", "--config", str(rendered)],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=self.log_path.open("wb"),
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.env},
            )

    service = ConfigService([], tmp_path / "stderr.log", env={"AUTHZ_POLICIES": str(policies)})
    service.start()
    try:
        assert status_of(service.check("/public/x")) == 200
        wait_for_lines(tmp_path / "decisions.log", 1)
        assert (
            service.metrics()[("authz_checks_total", (("decision", "allow"), ("reason", "rule")))]
            == 1
        )
    finally:
        code = service.stop()
    assert code == 0, service.stderr()[-2000:]


def test_a_bad_setting_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text("policies: .\nadmn: 127.0.0.1:9092\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz",
            "serve",
            "--config",
            str(config),
            "--admin",
            "127.0.0.1:99999",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert result.returncode == 1
    assert f"{config}:2: unknown key 'admn'; did you mean 'admin'?" in result.stderr
    assert (
        "--admin: admin: '127.0.0.1:99999': the port 99999 is out of range (1-65535)"
        in result.stderr
    )
