"""A chat story in a real browser: alice and bob in the demo room "#general" see each other's
messages live, who is online and who is typing, and hostile text stays text."""

from __future__ import annotations

import re

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
