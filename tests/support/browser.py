"""A real headless Chromium for the page tests, driven through ChromeDriver (Debian's
`chromium` and `chromium-driver`, installed by `./dev test` as Redis and nginx are).

Started with the flags a closed machine needs: no background networking, no component updates,
no sync, a fresh profile; it only ever loads pages from loopback.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def browser_paths() -> tuple[str, str] | None:
    """(browser, driver) when both are installed, else None."""
    browser = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A selenium WebDriver on a headless Chromium; skips the test when none is installed."""
    paths = browser_paths()
    if paths is None:
        pytest.skip("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = paths
    with tempfile.TemporaryDirectory(prefix="authz-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            session.set_page_load_timeout(30)
            yield session
        finally:
            session.quit()
