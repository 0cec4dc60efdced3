"""A chat story in a real browser: alice and bob in the demo room "#general" see each other's
messages live, who is online and who is typing, and hostile text stays text."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.browser.conftest import Browsing, wait_live

#: Markup that would run or load something if a page ever treated a message as HTML.
HOSTILE = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")


def open_general(browsing: Browsing, username: str) -> Page:
    """Log in, go to the chat page and pick #general from the room list (seeded at start-up)."""
    page = browsing.login(username)
    page.goto("/chat/")
    page.locator(".chat-sidebar").get_by_role("link", name="#general").click()
    page.wait_for_url("**/chat/*")
    expect(page.locator(".chat-room h1")).to_have_text("#general")
    wait_live(page)
    return page


def send(page: Page, text: str) -> None:
    """Type and send; wait until the server confirmed it (the pending copy got its id)."""
    page.locator(".chat-form textarea").fill(text)
    page.locator(".chat-form").get_by_role("button", name="Send").click()
    mine = page.locator(".chat-msg[data-id]").filter(has_text=text)
    expect(mine).to_have_count(1)
    expect(page.locator(".chat-msg.is-pending, .chat-msg.is-failed")).to_have_count(0)


def message(page: Page, text: str):
    return page.locator(".chat-messages .chat-msg").filter(
        has=page.locator(".chat-msg__body", has_text=text))


def test_alice_and_bob_chat_live_in_general_and_hostile_text_stays_text(browsing):
    alice = open_general(browsing, "alice")
    bob = open_general(browsing, "bob")

    # The demo history is there, and both see both of them online.
    expect(message(bob, "Welcome to #general!")).to_have_count(1)
    for page in (alice, bob):
        presence = page.locator(".chat-presence .chat-presence__user")
        expect(presence.filter(has_text="alice")).to_have_count(1)
        expect(presence.filter(has_text="bob")).to_have_count(1)

    # A message from alice shows up in bob's page with her name, no reload.
    send(alice, "Morning bob, is the release branch cut?")
    arrived = message(bob, "Morning bob, is the release branch cut?")
    expect(arrived).to_have_count(1)
    expect(arrived.locator(".chat-msg__name")).to_have_text("alice")

    # Bob starts typing: alice sees it, and it goes away on its own when he stops.
    typing = alice.locator(".chat-typing")
    expect(typing).to_be_hidden()
    bob.locator(".chat-form textarea").press_sequentially("yes, an hour ago")
    expect(typing).to_be_visible()
    expect(typing).to_have_text("bob is typing…")
    expect(typing).to_be_hidden(timeout=6_000)

    # Hostile markup is shown as the characters alice typed, on both sides.
    scripts_before = bob.locator("script").count()
    for text in HOSTILE:
        send(alice, text)
    for page in (alice, bob):
        for text in HOSTILE:
            body = message(page, text).locator(".chat-msg__body")
            expect(body).to_have_count(1)
            expect(body).to_have_text(text)
        assert page.locator(".chat-messages script, .chat-messages img").count() == 0
    assert bob.locator("script").count() == scripts_before
    assert browsing.errors.dialogs() == []

    # A URL becomes a link that cannot reach back into the page (no window.opener).
    send(alice, "Notes are at https://example.org/x, have a look")
    link = message(bob, "Notes are at").locator("a")
    expect(link).to_have_count(1)
    expect(link).to_have_text("https://example.org/x")
    expect(link).to_have_attribute("href", "https://example.org/x")
    expect(link).to_have_attribute("rel", re.compile(r"(^|\s)noopener(\s|$)"))
    expect(link).to_have_attribute("target", "_blank")
    # The comma after the URL is punctuation, not part of the link.
    expect(message(bob, "Notes are at").locator(".chat-msg__body")).to_have_text(
        "Notes are at https://example.org/x, have a look")
    assert browsing.errors.dialogs() == []


def test_a_room_alice_has_listed_but_not_open_counts_bobs_messages_live(browsing):
    # Alice makes a private room with bob, then goes to her dashboard: the room sits in the
    # chat panel's list, unread 0, and nothing is open.
    alice = browsing.login("alice")
    alice.goto("/chat/")
    name = f"unread-{uuid.uuid4().hex[:8]}"
    create = alice.locator(".chat-create").first
    create.locator("input[name=name]").fill(name)
    create.locator("select[name=kind]").select_option("private")
    create.locator("input[name=invite]").fill("bob")
    create.get_by_role("button", name="Create").click()
    alice.wait_for_url("**/chat/*")
    room_id = alice.locator("[data-chat-room]").get_attribute("data-room-id")
    alice.goto("/")
    wait_live(alice)
    badge = alice.locator(f'.chat-panel [data-room-unread="{room_id}"]')
    total = alice.locator(".chat-panel__total")
    expect(badge).to_be_hidden()
    before = int(total.text_content() or 0)

    # Bob posts there twice: alice's badge and the Chat button's total go up without a reload.
    bob = browsing.login("bob")
    bob.goto(f"/chat/{room_id}")
    wait_live(bob)
    send(bob, "alice, a question when you have a minute")
    expect(badge).to_have_text("1")
    expect(total).to_be_visible()
    expect(total).to_have_text(str(before + 1))
    send(bob, "no rush")
    expect(badge).to_have_text("2")
    expect(total).to_have_text(str(before + 2))

    # Opening the room in the panel clears its badge; messages in the open room do not count.
    alice.locator(".chat-panel__toggle").click()
    alice.locator(".chat-panel").get_by_role("link", name=f"#{name}").click()
    expect(message(alice, "no rush")).to_have_count(1)
    expect(badge).to_be_hidden()
    send(bob, "thanks!")
    expect(message(alice, "thanks!")).to_have_count(1)
    expect(badge).to_be_hidden()
    assert browsing.errors.dialogs() == []
