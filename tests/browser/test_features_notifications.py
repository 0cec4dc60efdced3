"""Stories of announcements and notifications in a real browser: an admin's banner reaches every
open tab as plain text and a dismissal follows the person around; a notification toasts and
counts in every tab, and "mark all read" clears the bell everywhere."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import flask_cli, open_tab, wait_live

#: A title an attacker (or a careless admin) might paste: it must read as text, never run.
HOSTILE_TITLE = "Heads up <script>alert(1)</script> maintenance"


def banner(page: Page, title: str):
    return page.locator("#announcement-banners .announcement").filter(has_text=title)


def bell_count(page: Page):
    return page.locator("#bell-root .bell-count")


def script_count(page: Page) -> int:
    return page.locator("script").count()


def test_an_announcement_appears_live_as_text_and_a_dismissal_reaches_every_tab(browsing):
    alice = browsing.new_context()
    tab1 = browsing.login("alice", browsing.new_page(alice))
    wait_live(tab1)
    tab2 = open_tab(alice, browsing)
    scripts_before = [script_count(tab) for tab in (tab1, tab2)]

    # The admin, on another computer, writes the announcement in the compose form.
    admin = browsing.login("admin")
    admin.get_by_role("link", name="Admin").click()
    admin.get_by_role("link", name="Compose and history").click()
    admin.wait_for_url("**/admin/announcements")
    admin.locator("#title").fill(HOSTILE_TITLE)
    admin.locator("#body").fill("The site may be slow for a few minutes.")
    admin.locator("#level").select_option("warning")
    admin.get_by_label("Everyone", exact=True).check()
    admin.get_by_role("button", name="Publish").click()
    expect(admin.locator(".flash--success")).to_contain_text("Announcement sent to")
    history_title = admin.locator("#announcement-history tbody tr").first.locator("strong")
    expect(history_title).to_have_text(HOSTILE_TITLE)

    for tab, before in zip((tab1, tab2), scripts_before, strict=True):
        shown = banner(tab, "Heads up")
        expect(shown).to_have_count(1)
        expect(shown).to_have_class(re.compile(r"\bannouncement--warning\b"))
        expect(shown.locator(".announcement__title")).to_have_text(HOSTILE_TITLE)
        expect(shown.locator(".announcement__body")).to_have_text(
            "The site may be slow for a few minutes.")
        # The announcement toasts too (its kind toasts by default), also as text.
        expect(tab.locator("#toasts .toast__title").filter(has_text="Heads up")).to_have_text(
            HOSTILE_TITLE)
        assert script_count(tab) == before, "a <script> element was injected"
    assert browsing.errors.dialogs() == []

    # Dismissed in one tab, gone from the other at once, and after a reload. The toast sits over
    # the banner's close button until it fades (8 s), so alice closes the toast first.
    tab1.locator("#toasts .toast").filter(has_text="Heads up").get_by_role(
        "button", name="Close").click()
    banner(tab1, "Heads up").get_by_role("button", name="Dismiss announcement").click()
    expect(banner(tab1, "Heads up")).to_have_count(0)
    expect(banner(tab2, "Heads up")).to_have_count(0)
    tab2.reload()
    wait_live(tab2)
    expect(tab2.locator("#announcement-banners .announcement")).to_have_count(0)
    expect(tab2.get_by_text("No active announcements.")).to_be_visible()

    # The admin's figures: one of the two user accounts dismissed it.
    admin.reload()
    expect(admin.locator("#announcement-history tbody tr").first.locator("[data-dismissed]")
           ).to_have_text("1")
    assert browsing.errors.dialogs() == []


def test_a_notification_toasts_and_counts_in_both_tabs_and_mark_all_read_clears_them(
    browsing, server
):
    alice = browsing.new_context()
    tab1 = browsing.login("alice", browsing.new_page(alice))
    wait_live(tab1)
    tab2 = open_tab(alice, browsing)
    before = int(bell_count(tab1).get_attribute("data-count") or "0")

    # An operator's deploy script tells alice, from a shell, through the database and Redis.
    out = flask_cli(server, "notify", "alice", "Deploy finished",
                    "--body", "Version 1.4.2 is live on production.")
    assert "Notified alice" in out

    for tab in (tab1, tab2):
        toast = tab.locator("#toasts .toast").filter(has_text="Deploy finished")
        expect(toast).to_have_count(1)
        expect(toast.locator(".toast__body")).to_have_text("Version 1.4.2 is live on production.")
        expect(bell_count(tab)).to_have_attribute("data-count", str(before + 1))
        expect(bell_count(tab)).to_have_text(str(before + 1))
        expect(bell_count(tab)).to_be_visible()
        # The dashboard's list takes it live as well.
        expect(tab.locator("#dashboard-notifications .notif").first.locator(".notif__title")
               ).to_have_text("Deploy finished")

    # Through the bell's menu to the inbox, where alice marks everything read.
    tab1.locator("#bell").click()
    expect(tab1.locator("#bell-menu")).to_be_visible()
    tab1.locator("#bell-menu").get_by_role("link", name="All notifications").click()
    tab1.wait_for_url("**/notifications")
    wait_live(tab1)
    newest = tab1.locator("#inbox-list .notif").first
    expect(newest.locator(".notif__title")).to_have_text("Deploy finished")
    expect(newest).to_have_class(re.compile(r"\bnotif--unread\b"))
    expect(tab1.locator(".js-unread-count")).to_have_text(str(before + 1))
    tab1.locator(".inbox-head").get_by_role("button", name="Mark all read").click()

    for tab in (tab1, tab2):
        expect(bell_count(tab)).to_have_attribute("data-count", "0")
        expect(bell_count(tab)).to_be_hidden()
        expect(tab.locator(".notif--unread")).to_have_count(0)
    expect(tab1.locator(".js-unread-count")).to_have_text("0")
    expect(tab1.locator("#inbox-list .js-mark-read")).to_have_count(0)

    # The server agrees: a fresh page load shows nothing unread.
    tab2.reload()
    expect(bell_count(tab2)).to_be_hidden()
    assert browsing.errors.dialogs() == []
