"""The decision page (issue 31) in a real headless Chromium against a real `authz serve`: a
denied request's id leads to the page that names the deciding rule; a reload changes the
"would it differ now" answer; hostile values render as text and never run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.service import check_request, parse_response, response_status
from tests.support.browser import headless_chromium
from tests.support.ports import LOOPBACK, free_port
from tests.support.service import ServiceProcess

HOST = "shop.example.com"
POLICY = """\
hosts: [shop.example.com]
rules:
  - name: no-admin
    action: deny
    to: [{paths: ["/admin/{**}"]}]
  - name: public
    action: allow
    to: [{methods: [GET], paths: ["/public/{**}"]}]
"""
OPENED = (
    POLICY
    + """\
  - name: private-opened
    action: allow
    to: [{methods: [GET], paths: ["/private/{**}"]}]
"""
)
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "decision-page.png"


class Service:
    def __init__(self, process: ServiceProcess, admin: str, policies: Path) -> None:
        self.process, self.admin, self.policies = process, admin, policies

    def check(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """(status, decision id) of a real Check."""
        message = check_request("GET", HOST, path, headers)
        response = parse_response(self.process.check_bytes(message.SerializeToString()))
        status = response_status(response)
        if status == 200:
            for option in response.ok_response.headers:
                if option.header.key == "x-authz-decision-id":
                    return status, str(option.header.value)
            raise AssertionError("an allow without a decision id")
        return status, str(json.loads(response.denied_response.body)["decision_id"])

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}/api{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def wait_held(self, decision_id: str) -> None:
        """The ring is fed off the request path, by the decision log's writer thread."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.api(f"/decisions?id={decision_id}")["decisions"]:
                return
            time.sleep(0.05)
        raise AssertionError(f"{decision_id} never reached the page")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("page")
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(POLICY)
    admin = f"{LOOPBACK}:{free_port()}"
    args = ("--admin", admin, "--no-watch", "--log-header", "x-note")
    with ServiceProcess(policies, extra_args=args) as process:
        yield Service(process, admin, policies)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (the tests only load pages in it); skips the tests
    that use it when none is installed."""
    with headless_chromium() as session:
        yield session


def test_a_denied_id_leads_to_its_rule_and_a_reload_changes_the_answer(
    service: Service, browser: Any
) -> None:
    status, denied = service.check("/admin/users")
    assert status == 403
    status, private = service.check("/private/report")
    assert status == 403
    service.wait_held(denied)
    service.wait_held(private)
    revision = service.api("/")["revision"]

    from selenium.webdriver.common.by import By

    base = f"http://{service.admin}"
    browser.get(base + "/")
    overview = browser.find_element(By.TAG_NAME, "main").text
    assert revision in overview
    assert "shop.yaml" in overview and "no-admin" in overview  # file, and the chart's reason

    # From the list, filtered by the id a client quoted, to the decision.
    browser.get(base + "/decisions?id=" + urllib.parse.quote(denied))
    browser.find_element(By.LINK_TEXT, denied).click()
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "no-admin" in page and HOST in page and "/admin/users" in page
    assert "would be the same now" in page
    deciding = browser.find_element(By.CSS_SELECTOR, "td b").text
    assert deciding == "no-admin"

    browser.get(base + "/decisions/" + private)
    assert "would be the same now" in browser.find_element(By.TAG_NAME, "main").text

    # A reload that opens /private: the page now says the answer would differ.
    (service.policies / "shop.yaml").write_text(OPENED)
    assert service.process.process is not None
    service.process.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while service.api("/")["revision"] == revision:
        assert time.monotonic() < deadline, "the reload never happened"
        time.sleep(0.1)
    browser.get(base + "/decisions/" + private)
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "would differ now" in page
    assert "private-opened" in page
    assert service.api("/decisions/" + private)["now"]["change"] == {
        "kind": "deny->allow",
        "key": "private-opened",
    }
    browser.get(base + "/")
    assert "loaded" in browser.find_element(By.TAG_NAME, "main").text  # the last reload
    if os.environ.get("UPDATE_SCREENSHOTS"):
        browser.get(base + "/decisions/" + denied)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))


def test_hostile_values_render_as_text(service: Service, browser: Any, tmp_path: Path) -> None:
    status, decision_id = service.check("/public/%3Cscript%3E", {"x-note": HOSTILE})
    assert status == 200
    service.wait_held(decision_id)
    assert service.api(f"/decisions/{decision_id}")["record"]["headers"]["x-note"] == HOSTILE

    from selenium.webdriver.common.by import By

    for path in (f"/decisions/{decision_id}", "/decisions", f"/decisions?reason={HOSTILE}"):
        browser.get(f"http://{service.admin}{path}")
        assert browser.title != "pwned"
        assert browser.find_elements(By.TAG_NAME, "script") == []
        assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    # The value is there, as text (in the record's JSON form).
    browser.get(f"http://{service.admin}/decisions/{decision_id}")
    assert json.dumps(HOSTILE) in browser.find_element(By.TAG_NAME, "pre").text
    shot = tmp_path / "hostile.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0


def test_the_page_is_get_only_and_forbids_scripts(service: Service) -> None:
    request = urllib.request.Request(f"http://{service.admin}/decisions", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 501
    with urllib.request.urlopen(f"http://{service.admin}/", timeout=10) as answer:
        policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy


def test_an_unknown_id_is_a_clear_404(service: Service) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{service.admin}/api/decisions/nope", timeout=10)
    assert missing.value.code == 404
    assert "no decision nope" in json.loads(missing.value.read())["error"]


def test_chromium_is_installed_where_the_suite_runs() -> None:
    """`./dev test` installs Chromium as root with apt-get (CI): there the page tests run."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        assert shutil.which("chromium") and shutil.which("chromedriver")


def test_an_unreadable_token_file_refuses_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            *(sys.executable, "-m", "authz", "serve", "--policies", "policies"),
            *("--listen", f"{LOOPBACK}:{free_port()}", "--admin", f"{LOOPBACK}:{free_port()}"),
            *("--admin-token-file", str(tmp_path / "missing")),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--admin-token-file" in done.stderr and "No such file" in done.stderr
