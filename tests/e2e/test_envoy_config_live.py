"""A live request through Envoy configured by `authz envoy-config`, in front of the real service.

allowed -> reaches the upstream (with the decision id header); denied -> 403; the service
stopped -> 503, never 200 (fail closed, and an outage is not mistaken for a deny).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.commands.demo import (
    find_envoy,
    start_authz,
    stop_process,
    wait_for_envoy,
    wait_for_port,
)
from tests.support.ports import free_port
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.e2e

POLICY = """\
rules:
  - name: public-reads
    action: allow
    to: [{methods: [GET], paths: ["/public/{**}"]}]
"""

# Loopback only, whatever the environment says about proxies.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Stack:
    base: str
    authz: subprocess.Popen[bytes]
    envoy: subprocess.Popen[bytes]
    access_log: Path


SHOP_POLICY = """\
hosts: [shop.example.com]
rules:
  - name: shop-reads
    action: allow
    to: [{methods: [GET], paths: ["/shop/{**}"]}]
"""

# Answered by Envoy itself when a request is routed by the catch-all virtual host.
OTHER_VHOST_BODY = "routed by the catch-all virtual host"


def _two_virtual_hosts(config: dict[str, Any]) -> None:
    """shop.example.com goes to the upstream; every other host gets a direct 404. This is how an
    operator serves several hosts, and where routing and policy could disagree about a host."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    route_config = hcm["typed_config"]["route_config"]
    (protected,) = route_config["virtual_hosts"]
    protected["domains"] = ["shop.example.com"]
    route_config["virtual_hosts"] = [
        protected,
        {
            "name": "other",
            "domains": ["*"],
            "routes": [
                {
                    "match": {"prefix": "/"},
                    "direct_response": {
                        "status": 404,
                        "body": {"inline_string": OTHER_VHOST_BODY},
                    },
                }
            ],
        },
    ]


def _start(
    tmp_path: Path,
    policies: dict[str, str],
    adjust: Callable[[dict[str, Any]], None] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    directory = tmp_path / "policies"
    directory.mkdir()
    for name, text in policies.items():
        (directory / name).write_text(text, encoding="utf-8")
    echo = EchoUpstream().start()
    authz_port, listen_port, admin_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    log_file = (tmp_path / "envoy.log").open("wb")
    try:
        authz = start_authz(str(directory), authz_port)
        processes.append(authz)
        wait_for_port(authz_port, 30, authz)
        config = tmp_path / "envoy.yaml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "authz",
                "envoy-config",
                "--authz",
                f"127.0.0.1:{authz_port}",
                "--listen",
                str(listen_port),
                "--listen-address",
                "127.0.0.1",
                "--upstream",
                f"127.0.0.1:{echo.port}",
                "--admin",
                str(admin_port),
                "-o",
                str(config),
                *extra_args,
            ],
            check=True,
            timeout=60,
        )
        if adjust is not None:
            document = yaml.safe_load(config.read_text(encoding="utf-8"))
            adjust(document)
            config.write_text(yaml.safe_dump(document), encoding="utf-8")
        envoy = subprocess.Popen(
            [find_envoy(), "-c", str(config), "--disable-hot-restart", "-l", "warning"],
            stdout=log_file,
        )
        processes.append(envoy)
        wait_for_envoy(admin_port, 30, envoy)
        wait_for_port(listen_port, 30, envoy)
        yield Stack(f"http://127.0.0.1:{listen_port}", authz, envoy, tmp_path / "envoy.log")
    finally:
        for process in reversed(processes):
            stop_process(process)
        log_file.close()
        echo.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of the test's own (the test stops its processes)."""
    yield from _start(tmp_path, {"public.yaml": POLICY})


# Stacks the tests only send requests through: one per module (a service and an Envoy start in
# about two seconds each on a loaded machine).
@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _start(tmp_path_factory.mktemp("stack"), {"public.yaml": POLICY})


@pytest.fixture(scope="module")
def hosts_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _start(
        tmp_path_factory.mktemp("hosts"), {"shop.yaml": SHOP_POLICY}, _two_virtual_hosts
    )


CONTEXT_POLICY = """\
rules:
  - name: partner-route
    action: allow
    to: [{paths: ["/partners/{**}", "/other/{**}"]}]
    when: [{context: api, equals: partners}]
"""


@pytest.fixture
def context_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from _start(
        tmp_path,
        {"partners.yaml": CONTEXT_POLICY},
        extra_args=("--route-context", "/partners/:api=partners"),
    )


def test_route_context_from_envoy_config_reaches_the_policy(context_stack: Stack) -> None:
    # Only the route that `--route-context` configured carries api=partners to the service.
    assert http_get(f"{context_stack.base}/partners/x")[0] == 200
    assert http_get(f"{context_stack.base}/other/x")[0] == 403


def test_allowed_denied_and_outage(stack: Stack) -> None:
    status, body = http_get(
        f"{stack.base}/public/hello", {"x-authz-principal": "spoofed-by-client"}
    )
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/public/hello"
    decision_id = seen["headers"].get("x-authz-decision-id")
    assert decision_id
    # A client-sent identity header never reaches the upstream.
    assert seen["headers"].get("x-authz-principal") != "spoofed-by-client"

    status, body = http_get(f"{stack.base}/private")
    assert status == 403
    assert b"echo" not in body

    stop_process(stack.authz)
    status, _ = http_get(f"{stack.base}/public/hello")
    assert status == 503

    # The access log links the request to the service's decision log by id.
    stop_process(stack.envoy)
    assert decision_id in stack.access_log.read_text(encoding="utf-8")


def test_path_tricks_are_checked_as_served(shared_stack: Stack) -> None:
    # Envoy normalizes before ext_authz: /public/../private is checked (and would be served) as
    # /private; an encoded slash is rejected by Envoy itself.
    stack = shared_stack
    assert http_get(f"{stack.base}/public/../private")[0] == 403
    assert http_get(f"{stack.base}//public/x")[0] == 200
    assert http_get(f"{stack.base}/public/a%2Fb")[0] == 400


def test_underscore_headers_are_rejected(shared_stack: Stack) -> None:
    stack = shared_stack
    # CGI/WSGI upstreams would read x_authz_principal as x-authz-principal, next to ours.
    status, body = http_get(f"{stack.base}/public/hello", {"x_authz_principal": "spoofed"})
    assert status == 400
    assert b"spoofed" not in body
    status, body = http_get(f"{stack.base}/public/hello", {"x_user_id": "mallory"})
    assert status == 400
    assert http_get(f"{stack.base}/public/hello")[0] == 200


@pytest.mark.parametrize("host", ["shop.example.com", "shop.example.com:8080", "shop.example.com."])
def test_host_with_port_or_dot_is_routed_as_judged(hosts_stack: Stack, host: str) -> None:
    # The service judges these under shop.example.com's policy (which allows /shop/...); Envoy
    # must route them by the shop.example.com virtual host too, not the catch-all.
    status, body = http_get(f"{hosts_stack.base}/shop/items", {"host": host})
    assert OTHER_VHOST_BODY.encode() not in body
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == "/shop/items"
    assert seen["headers"]["host"] == "shop.example.com"
    assert seen["headers"].get("x-authz-decision-id")


def test_other_hosts_are_judged_and_routed_elsewhere(hosts_stack: Stack) -> None:
    # No policy covers other.example.com: denied before the catch-all route is reached.
    status, body = http_get(f"{hosts_stack.base}/shop/items", {"host": "other.example.com:8080"})
    assert status == 403
    assert OTHER_VHOST_BODY.encode() not in body
