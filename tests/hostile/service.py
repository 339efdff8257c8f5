"""The real service as a process, a policy for it, a raw gRPC client and an oracle.

Shared by the wire fuzzing, SIGTERM and soak tests and by `bench/soak.py`:

    policy = HostilePolicy(directory, issuer=..., jwks_uri=...)   # writes the YAML
    with ServiceProcess(directory) as service:                   # `python -m authz serve`
        raw = service.check_bytes(request.SerializeToString())   # bytes in, CheckResponse out
        expected = oracle(method, host, raw_path, token_state)   # what the answer must be

Everything listens on and talks to 127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.hostile.reference import Invalid, reference_normalize

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
HOST = "shop.example.com"
AUDIENCE = "shop-api"
REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port that was free a moment ago (racy: callers retry on 'address in use')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def policy_yaml(*, issuer: str, jwks_uri: str | None = None, jwks_file: str | None = None,
                public: str = "public") -> str:
    """The policy every process test uses. `public` names the path prefix anyone may GET; the
    soak flips it between two values to rewrite the policy under load."""
    source = f"jwks_uri: {jwks_uri}" if jwks_uri else f"jwks_file: {jwks_file}"
    return textwrap.dedent(f"""\
        hosts: [{HOST}]
        authentication:
          jwt:
            - issuer: {issuer}
              audiences: [{AUDIENCE}]
              {source}
        rules:
          - name: no-admin
            action: deny
            to: [{{paths: [/admin, "/admin/{{**}}"]}}]
          - name: public
            action: allow
            to: [{{methods: [GET], paths: ["/{public}/{{**}}"]}}]
          - name: users
            action: allow
            from: [{{issuers: ["{issuer}"]}}]
            to: [{{paths: ["/api/{{**}}"]}}]
        """)


# -- the oracle ---------------------------------------------------------------------------------

VALID, INVALID, NONE = "valid", "invalid", "none"


@dataclass(frozen=True, slots=True)
class Expected:
    allowed: bool
    status: int  # 200 for allow; 400, 401, 403 or 431 for a deny
    why: str


def oracle(method: str, host: str, raw_path: str, token: str, *, public: str = "public",
           max_path_bytes: int = 8 * 1024) -> Expected:
    """What the service must answer, from POLICY.md and `policy_yaml` alone (not from authz).

    `token` is VALID (a token the trusted key signed, in force), INVALID (present, fails) or
    NONE.
    """
    if len(raw_path.encode("utf-8", "surrogatepass")) > max_path_bytes:
        return Expected(False, 431, "request_too_large")
    try:
        path, _ = reference_normalize(raw_path)
    except Invalid:
        return Expected(False, 400, "invalid_path")
    name = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    if name.endswith("."):
        name = name[:-1]
    if name != HOST:
        return Expected(False, 403, "no_policy_for_host")
    if token == INVALID:
        return Expected(False, 401, "jwt")
    if path == "/admin" or path.startswith("/admin/"):
        return Expected(False, 403, "no-admin")
    # POLICY.md: "the HTTP method, upper case"; the service reads methods case-insensitively.
    if method.upper() == "GET" and path.startswith(f"/{public}/"):
        return Expected(True, 200, "public")
    if path.startswith("/api/"):
        if token == VALID:
            return Expected(True, 200, "users")
        return Expected(False, 401, "no_matching_rule")
    return Expected(False, 403, "no_matching_rule")


def token_state(headers: Any, valid: Any) -> str:
    """VALID, INVALID or NONE for a decoded header map, as POLICY.md's default token location
    reads it: `authorization` (any case; repeated names joined with ","), `Bearer ` prefix
    (any case). A header without the prefix is no token at all; an empty one is invalid."""
    values = [v for k, v in headers.items() if k.lower() == "authorization"]
    if not values:
        return NONE
    auth = ",".join(values)
    if auth[:7].lower() != "bearer ":
        return NONE
    return VALID if auth[7:].strip() in valid else INVALID


# -- requests and responses --------------------------------------------------------------------


def protos() -> tuple[Any, Any]:
    """(external_auth_pb2, attribute_context_pb2): authz's own generated classes."""
    from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

    return external_auth_pb2, attribute_context_pb2


def check_request(method: str, host: str, path: str, headers: dict[str, str] | None = None,
                  *, source: str = "10.1.2.3", destination_port: int = 8080) -> Any:
    """A CheckRequest as Envoy sends it (pseudo-headers in the header map too)."""
    external_auth_pb2, _ = protos()
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method = method
    http.host = host
    http.path = path
    http.protocol = "HTTP/1.1"
    http.id = "fuzz"
    for name, value in {":method": method, ":authority": host, ":path": path, **(headers or {})}.items():
        http.headers[name] = value
    message.attributes.source.address.socket_address.address = source
    message.attributes.source.address.socket_address.port_value = 40000
    message.attributes.destination.address.socket_address.address = "10.0.0.1"
    message.attributes.destination.address.socket_address.port_value = destination_port
    return message


def parse_response(data: bytes) -> Any:
    external_auth_pb2, _ = protos()
    return external_auth_pb2.CheckResponse.FromString(data)


def response_status(response: Any) -> int:
    """The HTTP status the response stands for: 200 for OK, the denied status otherwise."""
    if response.status.code == 0:
        return 200
    code = response.denied_response.status.code
    return int(code) if code else 403


def metadata_reason(response: Any) -> str:
    """The `reason` field of the dynamic metadata, wherever it sits in the Struct."""
    def find(struct: Any) -> str:
        for key, value in struct.fields.items():
            kind = value.WhichOneof("kind")
            if key == "reason" and kind == "string_value":
                return str(value.string_value)
            if kind == "struct_value":
                found = find(value.struct_value)
                if found:
                    return found
        return ""

    return find(response.dynamic_metadata)


# -- the process ------------------------------------------------------------------------------


class ServiceProcess:
    """`python -m authz serve --policies DIR --listen 127.0.0.1:PORT`, ready when its gRPC health
    says SERVING. Stopped with SIGTERM (then SIGKILL after a bound) on exit."""

    def __init__(self, policies: str | os.PathLike[str], *, extra_args: tuple[str, ...] = (),
                 ready_timeout: float = 30.0) -> None:
        self.policies = str(policies)
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()
        self._channel: grpc.Channel | None = None
        self._check: Any = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServiceProcess:
        last = ""
        for _attempt in range(5):  # free_port is racy: retry on "address in use"
            self.port = free_port()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authz", "serve", "--policies", self.policies,
                 "--listen", self.address, *self.extra_args],
                cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                self._wait_ready()
                return self
            except RuntimeError as error:
                last = str(error)
                self._kill()
                if "cannot listen" not in last and "address" not in last.lower():
                    break
        raise RuntimeError(f"the service did not start: {last}")

    def _wait_ready(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        channel = grpc.insecure_channel(self.address)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"exited with {self.process.returncode}: {self.log()[-2000:]}")
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        finally:
            channel.close()
        raise RuntimeError(f"not SERVING after {self.ready_timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.address,
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024),
                     ("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )

    def raw_check(self, channel: grpc.Channel) -> Any:
        """A callable sending bytes as they are and returning the response bytes."""
        return channel.unary_unary(CHECK_METHOD, request_serializer=None, response_deserializer=None)

    def check_bytes(self, data: bytes, timeout: float = 10.0) -> bytes:
        if self._channel is None:
            self._channel = self.channel()
            self._check = self.raw_check(self._channel)
        return bytes(self._check(data, timeout=timeout))

    def peak_rss_kib(self) -> int:
        """VmHWM (peak resident set) of the service process, from /proc; 0 once it is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded); SIGKILL if it does not exit. Returns the exit code."""
        assert self.process is not None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise
        return int(self.process.returncode)

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.terminate()
        finally:
            self._kill()
            self._log.close()
