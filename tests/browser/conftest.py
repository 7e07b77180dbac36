"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a live gateway.

Nothing here skips. ``make test`` installs Debian's ``chromium`` package when
``/usr/bin/chromium`` is missing, so a missing browser or a missing
``playwright`` package is a broken set-up and fails the tests with a message
saying how to fix it. Playwright's own browser download is never used (it
needs internet access, which CI lacks): Playwright launches the system binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.live import LiveGateway

CHROMIUM = os.environ.get("SUANLI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium floods a closed network with update and sync requests.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 5_000  # the longest any single expectation waits


def chromium_path() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. The browser tests need Debian's chromium "
            "package: run `make test` (it installs it), or `apt-get install -y chromium`, "
            "or point SUANLI_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, for one test module at a time.

    Playwright's sync API keeps its event loop marked as running in the main
    thread while it is started, which would break the asyncio tests that come
    after; so it stops at the end of each module, before they run.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "The playwright package is missing: pip install -e '.[test]' (make test does).",
            pytrace=False,
        )
    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def gateway() -> Iterator[LiveGateway]:
    """A fresh demo market for each test, on a free loopback port; stopped afterwards."""
    with LiveGateway() as live:
        yield live


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A laptop-sized page; fails the test on any uncaught script error."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"script errors in the page: {errors}"
