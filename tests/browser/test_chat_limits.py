"""Limits as a person meets them, on a site configured strictly (3 messages per 10 minutes,
one new room an hour): the refusal says what happened and when to try again, and nothing typed
is lost — a refused message offers Retry and Edit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import wait_live
from tests.browser.test_chat_experience import People, composer, private_room, send
from tests.support.live import LiveServer, start_live_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    live = start_live_server(
        tmp_path_factory.mktemp("chat-limits"),
        workers=1,
        env={"CHAT_RATE_COUNT": "3", "CHAT_RATE_WINDOW": "600", "CHAT_ROOMS_PER_HOUR": "1"},
    )
    yield live
    live.stop()


@pytest.fixture
def people(browsing, server) -> People:
    return People(browsing, server)


def test_a_message_over_a_long_limit_fails_with_the_reason_and_retry_or_edit(people, server):
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, path=f"/chat/{room}")
    for n in range(3):
        send(page, f"fine {n}")
    expect(page.locator(".chat-msg[data-id]")).to_have_count(3)

    send(page, "one too many")
    failed = page.locator(".chat-msg.is-failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".chat-msg__problem")).to_have_text(
        "Not sent: Sending too fast: at most 3 messages every 600 seconds. "
        "Try again in 4 minutes.")
    expect(failed.locator(".chat-msg__body")).to_have_text("one too many")

    # Retry: still too soon, and it says so again (still there, still failed).
    failed.get_by_role("button", name="Retry").click()
    expect(failed.locator(".chat-msg__problem")).to_contain_text("Try again in")
    expect(page.locator(".chat-msg.is-failed")).to_have_count(1)
    # Edit: the text comes back into the box, with what was being typed after it.
    composer(page).fill("and a draft")
    failed.get_by_role("button", name="Edit").click()
    expect(page.locator(".chat-msg.is-failed")).to_have_count(0)
    expect(composer(page)).to_have_value("one too many\nand a draft")
    expect(composer(page)).to_be_focused()

    # A reload keeps the draft too.
    page.reload()
    wait_live(page)
    expect(composer(page)).to_have_value("one too many\nand a draft")
    assert page.locator(".chat-msg[data-id]").count() == 3


def test_a_second_room_within_the_hour_is_refused_with_when_to_try_again(people, server):
    maker = people.make("m")
    page = people.page(maker, path="/chat/")
    for n in range(2):
        page.goto("/chat/")
        create = page.locator(".chat-create").first
        create.locator("input[name=name]").fill(f"room-{n}-{uuid.uuid4().hex[:4]}")
        create.get_by_role("button", name="Create").click()
        page.wait_for_load_state()
    flash = page.locator(".flash--error")
    expect(flash).to_contain_text("You can create at most 1 room an hour. Try again in")
    expect(page.locator("[data-chat-room-list] [data-room-link]")).to_have_count(1)
