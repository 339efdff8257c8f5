"""What TLS costs a check on the gRPC door: the same `authz serve` (1,000 rules, the realistic
request) over plaintext, TLS with a client certificate, and that plus `--tls-allowed-client`
(read from the connection at every call), in alternating rounds of one run; medians and ratios.

    python -m bench tls --rounds 5 --seconds 3

The client is Python (grpc.aio, `--concurrency` calls in flight on one HTTP/2 connection, as
Envoy keeps one), pinned to the other core than the servers when there are two: it caps the
rate, so the ratios, not the absolute rates, are the result. On long-lived connections TLS costs
record encryption only; handshakes happen once per connection. The PKI is made here (bench does
not import the tests): a CA, a server leaf and a SPIFFE client leaf, ECDSA P-256.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from bench import fixtures
from bench.procs import CORES, PYTHON, free_port, pinned, started, wait_port

CLIENT_ID = "spiffe://cluster.local/ns/edge/sa/envoy"
SERVER_CORE = "0"
CLIENT_CORE = "1" if CORES > 1 else "0"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_pki(directory: Path) -> dict[str, Path]:
    """ca.pem, server.pem/-key.pem (localhost, 127.0.0.1), client.pem/-key.pem (CLIENT_ID)."""
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench-ca")).issuer_name(_name("bench-ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    sans: dict[str, list[x509.GeneralName]] = {
        "server": [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        "client": [x509.UniformResourceIdentifier(CLIENT_ID)],
    }
    for stem, names in sans.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        paths[stem] = directory / f"{stem}.pem"
        paths[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{stem}-key"] = directory / f"{stem}-key.pem"
        paths[f"{stem}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


LAYOUTS: dict[str, list[str]] = {
    "plaintext": [],
    "mTLS": ["--tls-cert", "{server}", "--tls-key", "{server-key}", "--tls-client-ca", "{ca}"],
    "mTLS + allowed client": [
        "--tls-cert", "{server}", "--tls-key", "{server-key}", "--tls-client-ca", "{ca}",
        "--tls-allowed-client", CLIENT_ID,
    ],
}  # fmt: skip


@contextlib.contextmanager
def servers(tmp: Path, pki: dict[str, Path], keys: list[fixtures.Key]) -> Iterator[dict[str, int]]:
    policies = fixtures.write_policies(tmp / "policies", 1000, keys)
    names = {k: str(v) for k, v in pki.items()}
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        for layout, extra in LAYOUTS.items():
            port = free_port()
            argv = [PYTHON, "-m", "authz", "serve", "--policies", str(policies), "--no-watch"]
            argv += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
            argv += [e.format(**names) for e in extra]
            log = tmp / f"{len(ports)}.log"
            process = stack.enter_context(started(pinned(argv, SERVER_CORE), log=log))
            wait_port(port, process, log)
            ports[layout] = port
        yield ports


def channel(port: int, pki: dict[str, Path], layout: str) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    if layout == "plaintext":
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        pki["ca"].read_bytes(), pki["client-key"].read_bytes(), pki["client"].read_bytes()
    )
    return grpc.aio.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


async def rate(
    port: int, pki: dict[str, Path], layout: str, message: bytes, seconds: float, concurrency: int
) -> float:
    """Checks per second answered OK over one connection for `seconds`."""
    async with channel(port, pki, layout) as chan:
        check = chan.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=None,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        first = await check(message, timeout=30)
        if first.status.code != 0:
            raise RuntimeError(f"{layout}: the bench request was not allowed: {first.status}")
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await check(message, timeout=30)
                assert answer.status.code == 0
                done += 1

        started_at = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started_at)


def compare(*, rounds: int, seconds: float, concurrency: int) -> dict[str, list[float]]:
    key = fixtures.make_key("ES256")
    message = fixtures.check_request(key.token(lifetime=6 * 3600)).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="authz-bench-tls-") as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp)
        with servers(tmp, pki, [key]) as ports:
            results: dict[str, list[float]] = {name: [] for name in ports}
            for name, port in ports.items():  # warm-up
                asyncio.run(rate(port, pki, name, message, seconds / 3, concurrency))
            for index in range(rounds):
                order = list(ports) if index % 2 == 0 else list(ports)[::-1]
                for name in order:
                    results[name].append(
                        asyncio.run(rate(ports[name], pki, name, message, seconds, concurrency))
                    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tls")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if CORES > 1:
        import os

        os.sched_setaffinity(0, {int(CLIENT_CORE)})
    results = compare(rounds=args.rounds, seconds=args.seconds, concurrency=args.concurrency)
    base = statistics.median(results["plaintext"])
    print(f"{'layout':24} {'median checks/s':>16} {'vs plaintext':>13}   rounds")
    for name, rates in results.items():
        median = statistics.median(rates)
        shown = " ".join(f"{r:.0f}" for r in rates)
        print(f"{name:24} {median:16.0f} {median / base:12.2f}x   {shown}")
    return 0
