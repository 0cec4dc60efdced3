"""Alice's dashboard on an ordinary morning, staged through the real paths (an operator's
broadcast, bob's chat message, a build notification) and photographed into a temporary folder:
tests never rewrite tracked files. The README's pictures come from ``make screenshots``."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import ROOT, flask_cli, save_dashboard, wait_live
from tests.support.forms import csrf_token_from
from tests.support.live import live_login


def test_alices_dashboard_with_a_banner_a_toast_and_the_chat_panel_open(
    browsing, server, tmp_path
):
    tracked = ROOT / "docs" / "screenshot-dashboard.png"
    before = tracked.read_bytes() if tracked.exists() else None
    # Announced earlier this morning: a banner (and only a banner) until she dismisses it.
    flask_cli(server, "broadcast", "Maintenance tonight at 22:00",
              "--body", "Tidings will be read-only for about 15 minutes.",
              "--level", "warning", "--author", "admin")

    # en-GB and UTC: times written by the page's script read like the server-rendered ones.
    page = browsing.login("alice", browsing.new_page(
        browsing.new_context(locale="en-GB", timezone_id="UTC")))
    wait_live(page)
    expect(page.locator("#announcement-banners .announcement__title")).to_have_text(
        "Maintenance tonight at 22:00")

    # The chat panel, opened on #general with its demo history.
    panel = page.locator("#chat-panel")
    panel.get_by_role("button", name="Chat").click()
    panel.get_by_role("link", name="#general").click()
    room = panel.locator(".chat-room--panel")
    expect(room.locator(".chat-msg[data-id]")).to_have_count(2)
    # Bob's demo message was alice's one unread: reading it here clears the panel's badge.
    expect(panel.locator(".chat-panel__total")).to_be_hidden()
    wait_live(page)

    # Bob asks from his own machine (the form that works without JavaScript); alice answers.
    room_id = room.get_attribute("data-room-id")
    bob = live_login(server, "bob", "bob-demo-pass")
    form = bob.get(f"{server.url}/chat/{room_id}", timeout=10)
    bob.post(f"{server.url}/chat/{room_id}/messages", timeout=10, data={
        "csrf_token": csrf_token_from(form.text), "body": "Morning! Standup in 5?"},
    ).raise_for_status()
    asked = room.locator(".chat-msg").filter(has_text="Morning! Standup in 5?")
    expect(asked.locator(".chat-msg__name")).to_have_text("bob")
    room.locator("textarea").fill("Sure, joining in a minute")
    room.get_by_role("button", name="Send").click()
    expect(room.locator(".chat-msg[data-id]").filter(has_text="Sure, joining")).to_have_count(1)

    # CI reports in: a toast, the bell counts it (with the unread welcome), the card lists it.
    flask_cli(server, "notify", "alice", "Build #42 passed",
              "--body", "All checks green on main.", "--link", "/notifications")
    toast = page.locator("#toasts .toast").filter(has_text="Build #42 passed")
    expect(toast).to_be_visible()
    expect(page.locator("#bell-root .bell-count")).to_have_text("2")
    expect(page.locator("#dashboard-notifications ~ p .js-unread-count")).to_have_text("2")
    expect(page.locator("#dashboard-notifications .notif__title").first).to_have_text(
        "Build #42 passed")

    picture = tmp_path / "dashboard.png"
    save_dashboard(page, picture)
    # Still there after the shot, so it is in the picture (toasts fade after 8 s).
    expect(toast).to_be_visible()
    assert picture.stat().st_size > 0
    assert (tracked.read_bytes() if tracked.exists() else None) == before
