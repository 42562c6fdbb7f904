"""The web page in a real browser against a real server and real CLI devices.

Each test has a user of its own (users never see each other's library), so the
tests are independent. Screenshots of the page at desktop (1280x800) and phone
(390x844) width are written to docs/screenshots/ on every run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.harness import Device, Server, wait_until
from tests.web.conftest import PHONE, log_in, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.web]

SESSION = "/api/v1/auth/session"
HOSTILE = "<img src=x onerror=alert(1)>.mp3"


def make_conflict(make_device: Callable[..., Device]) -> tuple[Device, Device]:
    """`laptop` and `phone` (manual conflicts) edit Notes/todo.md from the same base."""
    laptop, phone = make_device("laptop"), make_device("phone", "--conflicts", "manual")
    laptop.write("Notes/todo.md", "buy milk\n")
    laptop.sync()
    phone.sync()
    laptop.write("Notes/todo.md", "buy milk and bread (laptop)\n")
    laptop.sync()
    phone.write("Notes/todo.md", "buy oat milk (phone)\n")
    summary = phone.sync(check=False)  # exits 3: a conflict waits for a person
    assert summary.get("unresolved_conflicts") == ["Notes/todo.md"], summary
    return laptop, phone


def conflicts(device: Device) -> list[dict[str, object]]:
    with device.api() as client:
        listed: list[dict[str, object]] = client.get("/api/v1/sync/conflicts").json()["conflicts"]
        return listed


def test_log_in_rename_a_device_and_resolve_a_conflict(
    page: Page, username: str, make_device: Callable[..., Device]
) -> None:
    laptop, phone = make_conflict(make_device)
    log_in(page, username)
    expect(page.locator("#username")).to_have_text(username)

    page.get_by_role("link", name=re.compile("^Conflicts")).click()
    card = page.locator("article.conflict")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading", level=2)).to_have_text("Notes/todo.md")
    expect(card).to_contain_text("On phone")
    screenshot(page, "conflicts-desktop")
    card.get_by_role("button", name="Keep both versions of Notes/todo.md").click()
    expect(page.locator("article.conflict")).to_have_count(0)
    expect(page.get_by_text("No conflicts")).to_be_visible()
    assert conflicts(laptop) == []
    # Both versions are in the library: the phone's as a conflict copy.
    phone.sync()
    laptop.sync()
    names = sorted(p for p in laptop.tree() if p.startswith("Notes/"))
    assert names[0] == "Notes/todo (conflict phone " + names[0].split("conflict phone ")[1]
    assert (laptop.folder / names[0]).read_text() == "buy oat milk (phone)\n"
    assert (laptop.folder / "Notes/todo.md").read_text() == "buy milk and bread (laptop)\n"

    page.get_by_role("link", name="Devices").click()
    page.get_by_label("New name for laptop").fill("work laptop")
    page.locator("article.device", has_text="laptop").get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", name="work laptop")).to_be_visible()
    with laptop.api() as client:
        names_now = {d["name"] for d in client.get("/api/v1/sync/devices").json()["devices"]}
    assert names_now == {"work laptop", "phone"}
    screenshot(page, "devices-desktop")

    # Disable and enable again.
    page.get_by_role("button", name="Disable work laptop").click()
    expect(page.get_by_role("button", name="Enable work laptop")).to_be_visible()
    assert laptop.sync(check=False)["exit"] != 0  # a disabled device is refused
    page.get_by_role("button", name="Enable work laptop").click()
    expect(page.get_by_role("button", name="Disable work laptop")).to_be_visible()
    assert laptop.sync()["exit"] == 0

    # A new token for the phone, shown once, with a copy button.
    page.get_by_role("button", name="New token for phone").click()
    page.get_by_role("dialog").get_by_role("button", name="New token").click()
    token = page.get_by_role("textbox", name="Token", exact=True)
    expect(token).to_have_value(re.compile(r"^ssd_"))
    page.get_by_role("button", name="Copy token").click()
    expect(page.get_by_role("status")).to_contain_text("Token copied")
    new_token = token.input_value()
    exchanged = httpx.post(
        f"{laptop.server.url}/api/v1/auth/device", json={"device_token": new_token}
    )
    assert exchanged.status_code == 200, exchanged.text
    old = httpx.post(
        f"{laptop.server.url}/api/v1/auth/device",
        json={"device_token": phone.config()["device_token"]},
    )
    assert old.status_code == 401
    page.get_by_role("button", name="Done").click()
    expect(token).to_be_hidden()

    # Delete, after a confirmation (cancelling keeps it).
    page.get_by_role("button", name="Delete phone").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator("article.device")).to_have_count(2)
    page.get_by_role("button", name="Delete phone").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("article.device")).to_have_count(1)
    with laptop.api() as client:
        left = [d["name"] for d in client.get("/api/v1/sync/devices").json()["devices"]]
    assert left == ["work laptop"]


def test_browse_download_and_restore_an_old_revision(
    page: Page, username: str, make_device: Callable[..., Device], tmp_path: Path
) -> None:
    laptop, phone = make_device("laptop"), make_device("phone")
    first, second = os.urandom(300_000), os.urandom(200_000)
    laptop.write("Docs/report.bin", first)
    laptop.write("Docs/notes/a.txt", "a")
    laptop.write("readme.txt", "hello")
    laptop.sync()
    laptop.write("Docs/report.bin", second)
    laptop.sync()
    phone.sync()
    assert (phone.folder / "Docs/report.bin").read_bytes() == second

    log_in(page, username)
    rows = page.locator("#entries tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Docs/")
    screenshot(page, "library-desktop")
    page.get_by_role("link", name="Docs/").click()
    expect(page.locator("#crumbs")).to_contain_text("Docs")
    report = page.locator("tr.file", has_text="report.bin")
    expect(report).to_contain_text("2")

    with page.expect_download() as info:
        report.get_by_role("button", name="Download report.bin").click()
    download = info.value
    assert download.suggested_filename == "report.bin"
    assert Path(download.path()).read_bytes() == second
    # The link the browser followed carries a short-lived ticket, not a token.
    assert "/api/v1/library/download?ticket=" in download.url

    report.get_by_role("button", name="History of report.bin").click()
    history = page.locator("#revisions tbody tr")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("2 (current)")
    screenshot(page, "history-desktop")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download revision 1").click()
    assert Path(info.value.path()).read_bytes() == first

    page.get_by_role("button", name="Restore revision 1").click()
    page.get_by_role("dialog").get_by_role("button", name="Restore").click()
    expect(history).to_have_count(3)
    expect(history.nth(0)).to_contain_text("3 (current)")
    # A normal change: it reaches the devices through the feed.
    phone.sync()
    assert (phone.folder / "Docs/report.bin").read_bytes() == first


def test_a_change_made_by_a_client_appears_without_a_reload(
    page: Page, username: str, make_device: Callable[..., Device]
) -> None:
    laptop = make_device("laptop")
    laptop.write("start.txt", "x")
    laptop.sync()
    log_in(page, username)
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#activity-list li")).to_have_count(1)
    page.evaluate("window.__notReloaded = true")

    laptop.write("Inbox/from the laptop.txt", "hi")
    laptop.sync()
    entry = page.locator("#activity-list li", has_text="Inbox/from the laptop.txt")
    expect(entry).to_contain_text("by laptop", timeout=15_000)
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "activity-desktop")
    # The library view follows the feed too.
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Library").click()
    laptop.write("Later/next.txt", "again")
    laptop.sync()
    expect(page.get_by_role("link", name="Later/")).to_be_visible(timeout=15_000)
    assert page.evaluate("window.__notReloaded") is True


def test_a_hostile_file_name_is_shown_as_text(
    page: Page, username: str, make_device: Callable[..., Device]
) -> None:
    laptop = make_device("laptop")
    laptop.write(f"Music/{HOSTILE}", b"not really music")
    laptop.sync()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page, username)
    page.get_by_role("link", name="Music/").click()
    name = page.locator("tr.file .name")
    expect(name).to_have_text(HOSTILE)
    assert page.locator("#entries img").count() == 0
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#activity-list li .name")).to_have_text(f"Music/{HOSTILE}")
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_the_session_survives_a_reload_refuses_csrf_and_ends_on_logout(
    page: Page, context: BrowserContext, username: str, server: Server
) -> None:
    log_in(page, username)
    [cookie] = [c for c in context.cookies() if c["name"] == "shelfsync_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == SESSION
    # Nothing the page's script can read holds a token.
    assert page.evaluate("document.cookie") == ""
    assert (
        page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    )

    page.reload()
    expect(page.locator("#username")).to_have_text(username)
    expect(page.get_by_role("heading", name="Library", exact=True)).to_be_visible()

    # CSRF: the browser sends the cookie, but without the page's header (or
    # from another origin) the state-changing request is refused.
    forged = page.request.post(f"{SESSION}/refresh")
    assert forged.status == 403
    assert forged.json()["code"] == "csrf_rejected"
    cross = page.request.post(
        f"{SESSION}/refresh",
        headers={"X-Requested-With": "x", "Origin": "http://evil.example"},
    )
    assert cross.status == 403
    assert cross.json()["code"] == "csrf_rejected"
    logout_forged = page.request.delete(SESSION)
    assert logout_forged.status == 403
    expect(page.locator("#username")).to_have_text(username)  # still logged in

    [cookie] = [c for c in context.cookies() if c["name"] == "shelfsync_session"]
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to shelfsync")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Log in to shelfsync")).to_be_visible()
    # The cookie's token was revoked, not only forgotten.
    stolen = httpx.post(
        f"{server.url}{SESSION}/refresh",
        headers={"X-Requested-With": "x"},
        cookies={"shelfsync_session": cookie["value"]},
    )
    assert stolen.status_code == 401


def test_the_page_works_at_phone_width(
    browser: Browser, server: Server, username: str, make_device: Callable[..., Device]
) -> None:
    make_conflict(make_device)
    context = browser.new_context(viewport=PHONE, base_url=server.url, is_mobile=True)
    try:
        page = context.new_page()
        log_in(page, username)
        expect(page.get_by_role("link", name="Notes/")).to_be_visible()
        # Nothing is wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "library-phone")
        page.get_by_role("link", name=re.compile("^Conflicts")).click()
        expect(page.locator("article.conflict")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "conflicts-phone")
        page.get_by_role("link", name="Devices").click()
        expect(page.locator("article.device")).to_have_count(2)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "devices-phone")
    finally:
        context.close()


def test_every_control_is_labelled_and_reachable_by_keyboard(
    page: Page, username: str, make_device: Callable[..., Device]
) -> None:
    laptop = make_device("laptop")
    laptop.write("a.txt", "a")
    laptop.sync()
    log_in(page, username)
    sections = page.get_by_role("navigation", name="Sections")
    for view in ("Library", "Devices", "Conflicts", "Activity"):
        sections.get_by_role("link", name=re.compile(f"^{view}")).click()
        page.wait_for_timeout(200)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('button, input, select, a[href]')]
                .filter((e) => e.offsetParent !== null)
                .filter((e) => {
                  const label = e.getAttribute('aria-label') || e.textContent.trim()
                    || (e.id && document.querySelector(`label[for="${e.id}"]`));
                  return !label;
                }).map((e) => e.outerHTML)"""
        )
        assert unlabelled == [], f"{view}: {unlabelled}"
    # Keyboard: from the top, Tab reaches the nav and Enter follows it.
    sections.get_by_role("link", name="Library").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    wait_until(lambda: page.url.endswith("#/devices"), timeout_s=5, what="the devices view")
