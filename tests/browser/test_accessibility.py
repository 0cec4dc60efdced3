"""axe-core on every page, logged out, as a user and as an admin, on a phone and a desktop:
no serious or critical violation anywhere (issue 16, item 8).

Pages are shown in the state people meet them in: banners of every level with "+N more", unread
notifications, the bell's menu open, a preview on the compose page, an error on a form.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import axe_violations, flask_cli, wait_live

LOGGED_OUT = ["/auth/login", "/auth/register", "/no-such-page"]
USER = ["/", "/notifications", "/notifications?filter=unread", "/notifications/preferences",
        "/chat/", "/chat/{general}"]
ADMIN = ["/", "/admin/", "/admin/users", "/admin/announcements",
         "/admin/announcements/{announcement}/edit", "/admin/ops"]


def describe(path: str, violations: list[dict]) -> list[str]:
    return [f"{path}: {v['id']} ({v['impact']}) {v['help']}: "
            + "; ".join(f"{n['target']} -> {n['html']}" for n in v["nodes"][:3])
            for v in violations]


def check(page: Page, path: str, found: list[str]) -> None:
    page.goto(path)
    if page.locator("#rt-status").count():
        wait_live(page)
    found.extend(describe(path, axe_violations(page)))


@pytest.fixture(scope="module")
def staged(server) -> dict[str, str]:
    """Banners of every level (more than fit), unread notifications, a room id."""
    for level in ("info", "warning", "critical"):
        flask_cli(server, "broadcast", f"A {level} announcement for everyone", "--body",
                  "Read me. " * 40, "--level", level, "--author", "admin")
    for name in ("alice", "admin"):
        flask_cli(server, "notify", name, "Build #7 passed", "--link", "/notifications")
    out = flask_cli(server, "broadcast", "Editable one", "--author", "admin")
    announcement = re.search(r"Announcement (\d+) sent", out).group(1)
    return {"announcement": announcement}


def general_room(page: Page) -> str:
    page.goto("/chat/")
    href = page.locator(".chat-sidebar").get_by_role("link", name="#general").get_attribute("href")
    return href.rsplit("/", 1)[1]


def test_logged_out_pages_have_no_serious_violations(browsing, screen):
    browsing.errors.allow(r"status of 404 .*/no-such-page\]$")  # the 404 page is one of them
    page = browsing.new_page(browsing.new_context(screen=screen))
    found: list[str] = []
    for path in LOGGED_OUT:
        check(page, path, found)
    # A form with its errors showing.
    page.goto("/auth/login")
    page.locator("form [type=submit]").click()
    found.extend(describe("/auth/login (errors)", axe_violations(page)))
    assert not found, "\n".join(found)


def test_a_users_pages_have_no_serious_violations(browsing, staged, screen):
    page = browsing.login("alice", browsing.new_page(browsing.new_context(screen=screen)))
    names = {**staged, "general": general_room(page)}
    found: list[str] = []
    for path in USER:
        check(page, path.format(**names), found)
    # The dashboard with the bell's menu and the "+N more" announcements open.
    page.goto("/")
    wait_live(page)
    page.locator(".announcements__summary").click()
    page.locator("#bell").click()
    found.extend(describe("/ (menus open)", axe_violations(page)))
    assert not found, "\n".join(found)


def test_an_admins_pages_have_no_serious_violations(browsing, staged, screen):
    page = browsing.login("admin", browsing.new_page(browsing.new_context(screen=screen)))
    found: list[str] = []
    for path in ADMIN:
        check(page, path.format(**staged), found)
    # The compose form after Preview of a critical announcement to everyone (the
    # confirmation step), and with errors on its fields.
    page.goto("/admin/announcements")
    page.locator("#title").fill("Preview me")
    page.locator("#level").select_option("critical")
    page.get_by_role("button", name="Preview").click()
    found.extend(describe("/admin/announcements (preview)", axe_violations(page)))
    page.locator("#title").fill("")
    page.locator("#expires_minutes").fill("0")
    page.get_by_role("button", name="Preview").click()
    found.extend(describe("/admin/announcements (errors)", axe_violations(page)))
    # Deactivation's question open.
    page.goto("/admin/users")
    page.locator("details.confirm-inline summary").first.click()
    found.extend(describe("/admin/users (confirm open)", axe_violations(page)))
    assert not found, "\n".join(found)
