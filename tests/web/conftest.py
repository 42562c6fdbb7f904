"""Browser fixtures: a real `shelfsync serve`, real CLI devices, and Debian's
chromium driven by Playwright (never a browser download: `make sysdeps`
installs the `chromium` package)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.e2e.conftest import make_device, server, username
from tests.e2e.harness import PASSWORD, Server

# The e2e suite's server and devices, shared (a fixture is found where it is imported).
__all__ = ["make_device", "server", "username"]

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# The suite runs beside other server processes on two shared cores: give the
# page time (an assertion that can never pass still fails, only later).
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make sysdeps`"
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def context(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP, base_url=server.url, accept_downloads=True)
    # The copy button writes to the clipboard.
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    assert not errors, f"the page raised: {errors}"


def log_in(page: Page, username: str) -> None:
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Library", exact=True).wait_for()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
