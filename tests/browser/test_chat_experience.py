"""Chat the way people expect it, in a real browser on a phone (390×844) and a desktop: nothing
typed offline is lost or doubled, the composer stays in view with many rooms, edits, deletes,
first DMs and read state travel live, and the room reads like a conversation (days, new
messages, grouping, mentions) to the eye and to a screen reader."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import create_engine, text

from tests.browser.conftest import Browsing, flask_cli, wait_live
from tests.support.forms import csrf_token_from
from tests.support.live import LiveServer, live_login

VIEWPORTS = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}

#: What Chromium logs on its own while the emulated network is down.
OFFLINE_NOISE = (r"ERR_INTERNET_DISCONNECTED", r"WebSocket connection to .* failed")


@pytest.fixture(params=["phone", "desktop"])
def device(request) -> str:
    return request.param


class People:
    """Fresh accounts per story (the flask CLI, as an operator would), so one story's sends
    and rooms never count against another's limits, and their logged-in pages."""

    def __init__(self, browsing: Browsing, server: LiveServer):
        self.browsing = browsing
        self.server = server
        self.passwords: dict[str, str] = {}

    def make(self, prefix: str, admin: bool = False) -> str:
        name = f"{prefix}{uuid.uuid4().hex[:6]}"
        password = f"pw-{uuid.uuid4().hex}"
        flask_cli(self.server, "create-user", name, "--password", password,
                  *(["--admin"] if admin else []))
        self.passwords[name] = password
        return name

    def http(self, name: str) -> requests.Session:
        return live_login(self.server, name, self.passwords[name])

    def context(self, device: str = "desktop") -> BrowserContext:
        return self.browsing.new_context(**VIEWPORTS[device])

    def page(self, name: str, device: str = "desktop", context: BrowserContext | None = None,
             path: str = "/") -> Page:
        page = self.browsing.new_page(context or self.context(device))
        page.goto("/auth/login")
        page.locator("#username").fill(name)
        page.locator("#password").fill(self.passwords[name])
        page.locator("form [type=submit]").click()
        page.wait_for_url(self.server.url + "/")
        if path != "/":
            page.goto(path)
        wait_live(page)
        return page


@pytest.fixture
def people(browsing, server) -> Iterator[People]:
    yield People(browsing, server)


def form(server: LiveServer, http: requests.Session, path: str, data: dict) -> requests.Response:
    token = csrf_token_from(http.get(server.url + "/chat/", timeout=10).text)
    return http.post(server.url + path, data={"csrf_token": token, **data},
                     allow_redirects=False, timeout=10)


def room_of(response: requests.Response) -> int:
    assert response.status_code == 302, response.text[:300]
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def private_room(server: LiveServer, http: requests.Session, *invite: str) -> int:
    name = f"room-{uuid.uuid4().hex[:6]}"
    return room_of(form(server, http, "/chat/rooms",
                        {"name": name, "kind": "private", "invite": ",".join(invite)}))


def say(server: LiveServer, http: requests.Session, room: int, body: str) -> dict:
    response = http.post(f"{server.url}/chat/{room}/messages", timeout=10,
                         headers={"Accept": "application/json"},
                         data={"csrf_token": csrf_token_from(
                             http.get(f"{server.url}/chat/", timeout=10).text), "body": body})
    assert response.status_code == 200, response.text[:300]
    return response.json()["message"]


def stored(server: LiveServer, http: requests.Session, room: int, body: str) -> int:
    """How many stored messages of the room carry exactly this text (the server's truth)."""
    page = http.get(f"{server.url}/chat/{room}/messages", timeout=10).json()
    return sum(1 for m in page["messages"] if m["body"] == body)


def composer(page: Page):
    return page.locator(".chat-form textarea")


def send(page: Page, body: str) -> None:
    composer(page).fill(body)
    composer(page).press("Enter")


def message(page: Page, body: str):
    return page.locator(".chat-messages .chat-msg").filter(
        has=page.locator(".chat-msg__body", has_text=body))


def in_view(page: Page, locator) -> None:
    """The element is shown and wholly inside the window, without scrolling the page."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= size["width"] + 0.5, (box, size)
    assert box["y"] + box["height"] <= size["height"] + 0.5, (box, size)
    assert page.evaluate("() => window.scrollY") == 0


# ------------------------------------------------------------------------ the send queue


def test_a_message_typed_offline_shows_as_sending_and_is_delivered_once_on_reconnect(
        people, server, browsing, device):
    browsing.errors.allow(*OFFLINE_NOISE)
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, device, path=f"/chat/{room}")
    other = people.page(reader, path=f"/chat/{room}")
    expect(page.locator(".chat-presence__user").filter(has_text=reader)).to_have_count(1)

    # The network goes away: the socket drops and cannot come back.
    page.context.set_offline(True)
    page.evaluate("() => TidingsRealtime.ws && TidingsRealtime.ws.close()")
    status = page.locator(".chat-form__status")
    expect(status).to_contain_text("messages you send now go out when the connection is back")
    expect(page.locator(".chat-presence")).to_have_class(re.compile(r"\bis-unknown\b"))

    text_ = f"typed on the train {uuid.uuid4().hex[:6]}"
    send(page, text_)
    pending = page.locator(".chat-msg.is-pending").filter(has_text=text_)
    expect(pending).to_have_count(1)
    expect(pending.locator(".chat-msg__status")).to_have_text("Sending…")
    expect(composer(page)).to_have_value("")
    # It survives a look at the page a moment later, still queued, still not delivered.
    expect(pending).to_have_count(1)
    assert stored(server, people.http(reader), room, text_) == 0

    page.context.set_offline(False)
    wait_live(page)
    expect(message(page, text_).and_(page.locator("[data-id]"))).to_have_count(1)
    expect(page.locator(".chat-msg.is-pending, .chat-msg.is-failed")).to_have_count(0)
    expect(message(other, text_)).to_have_count(1)
    expect(status).to_be_hidden()
    expect(page.locator(".chat-presence")).not_to_have_class(re.compile(r"\bis-unknown\b"))
    assert stored(server, people.http(reader), room, text_) == 1


def test_a_send_whose_reply_is_lost_goes_again_and_is_stored_once(people, server, browsing):
    """The message reaches the server, then the connection dies before the reply: the page
    cannot know, so it sends again after the reconnect with the same client id."""
    browsing.errors.allow(*OFFLINE_NOISE)
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, path=f"/chat/{room}")
    other = people.page(reader, path=f"/chat/{room}")
    page.evaluate("""() => {
      const rt = TidingsRealtime, raw = rt.raw.bind(rt);
      rt.raw = (message) => {
        const sent = raw(message);
        if (message.type === "chat.send" && !window.__cut) {
          window.__cut = true;
          rt.ws.close();   // the frame is out; its reply will never be read
        }
        return sent;
      };
    }""")
    text_ = f"said once {uuid.uuid4().hex[:6]}"
    send(page, text_)
    expect(message(other, text_)).to_have_count(1)
    wait_live(page)
    expect(message(page, text_).and_(page.locator("[data-id]"))).to_have_count(1)
    expect(page.locator(".chat-msg.is-pending, .chat-msg.is-failed")).to_have_count(0)
    assert page.evaluate("() => window.__cut") is True
    assert stored(server, people.http(reader), room, text_) == 1
    expect(message(other, text_)).to_have_count(1)


def test_quick_replies_go_through_and_a_burst_over_the_limit_waits_its_turn_in_order(
        people, server):
    """Ten messages at once are fine (a burst refills over 20 s); beyond that the page says
    why a message waits and sends it by itself as soon as the limit allows: in order, once."""
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, path=f"/chat/{room}")
    replies = ["yes", "ok", "sure", "on it", "done", "thanks", "nice", "brb"]
    for reply in replies:
        send(page, reply)
    expect(page.locator(".chat-msg[data-id]")).to_have_count(8)
    expect(page.locator(".chat-msg.is-failed, .chat-msg.is-pending")).to_have_count(0)

    burst = [f"burst {n}" for n in range(8)]
    for body in burst:
        send(page, body)
    waiting = page.locator(".chat-msg.is-pending .chat-msg__problem")
    expect(waiting.first).to_contain_text("Sending too fast: at most 10 messages every 20 seconds.")
    expect(waiting.first).to_contain_text("It will go out by itself.")
    expect(page.locator(".chat-msg[data-id]")).to_have_count(16, timeout=60_000)
    expect(page.locator(".chat-msg.is-failed, .chat-msg.is-pending")).to_have_count(0)
    bodies = page.locator(".chat-msg[data-id] .chat-msg__body").all_text_contents()
    assert bodies == replies + burst
    other = people.page(reader, path=f"/chat/{room}")
    expect(other.locator(".chat-msg[data-id]")).to_have_count(16)


def test_a_paste_over_the_limit_is_counted_and_refused_never_cut(people, server):
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, path=f"/chat/{room}")
    counter = page.locator(".chat-counter")
    expect(counter).to_be_hidden()
    composer(page).fill("x" * 1900)
    expect(counter).to_have_text("1,900 / 2,000")
    pasted = "y" * 2100
    composer(page).fill(pasted)
    expect(counter).to_have_text("2,100 / 2,000 — 100 too many")
    composer(page).press("Enter")
    expect(page.locator(".chat-form .chat-error")).to_have_text(
        "This message is 2,100 characters; the limit is 2,000. Shorten it or send it in parts.")
    expect(composer(page)).to_have_value(pasted)
    expect(page.locator(".chat-msg.is-pending, .chat-msg[data-id]")).to_have_count(0)


# ------------------------------------------------------------------------ layout


def test_composer_and_send_stay_in_view_with_ten_rooms(people, server, device):
    host, member = people.make("adm", admin=True), people.make("m")
    http = people.http(host)
    rooms = [private_room(server, http, member) for _ in range(10)]
    say(server, http, rooms[0], "hello from the first room")

    # The chat page: the conversation fills the window and the composer is at its bottom.
    page = people.page(member, device, path=f"/chat/{rooms[0]}")
    in_view(page, composer(page))
    in_view(page, page.get_by_role("button", name="Send"))
    if device == "phone":
        # The conversation comes first; the room list is folded away below it.
        sidebar = page.locator("[data-chat-sidebar]")
        assert sidebar.evaluate("d => d.open") is False
        assert page.locator(".chat-room").bounding_box()["y"] < sidebar.bounding_box()["y"]
        sidebar.locator("summary").click()
        expect(sidebar.locator("[data-chat-room-list] [data-room-link]")).to_have_count(10)

    # The panel on another page.
    page.goto("/")
    wait_live(page)
    panel = page.locator("#chat-panel")
    panel.get_by_role("button", name="Chat").click()
    links = panel.locator("[data-chat-room-list] [data-room-link]")
    expect(links).to_have_count(10)
    box = panel.bounding_box()
    size = page.viewport_size
    if device == "phone":
        # At most half the screen, and a room opens on the chat page.
        assert box["height"] <= size["height"] * 0.5, box
        panel.locator(f'[data-room-link="{rooms[0]}"]').click()
        page.wait_for_url(f"**/chat/{rooms[0]}")
        in_view(page, composer(page))
        return
    # The list scrolls inside the panel instead of pushing it off the screen.
    assert box["y"] >= 0
    links.last.scroll_into_view_if_needed()
    panel.locator(f'[data-room-link="{rooms[0]}"]').click()
    room = panel.locator(".chat-room--panel")
    expect(room.locator(".chat-msg[data-id]")).to_have_count(1)
    in_view(page, room.locator("textarea"))
    in_view(page, room.get_by_role("button", name="Send"))
    room.get_by_role("button", name="← Rooms").click()
    expect(links.first).to_be_visible()


def test_no_sideways_scrolling_at_360_pixels_on_chat_pages(people, server):
    host, member = people.make("adm", admin=True), people.make("m")
    http = people.http(host)
    room = private_room(server, http, member)
    say(server, http, room, "a-very-long-word-" * 12 + " https://example.org/" + "x" * 80)
    page = people.page(member, context=people.browsing.new_context(
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True))
    for path in ("/chat/", f"/chat/{room}", "/chat/browse", "/"):
        page.goto(path)
        wait_live(page)
        if path == "/":
            page.locator("#chat-panel").get_by_role("button", name="Chat").click()
            expect(page.locator(".chat-panel__list")).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"{path} is {width}px wide at 360"


# ------------------------------------------------------------------------ live for everyone


def test_edit_and_delete_reach_the_other_persons_page_live(people, server, device):
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, device, path=f"/chat/{room}")
    other = people.page(reader, path=f"/chat/{room}")
    send(page, "meet at 10")
    sent = message(page, "meet at 10").and_(page.locator("[data-id]"))
    expect(sent).to_have_count(1)
    message_id = sent.get_attribute("data-id")
    mine = page.locator(f'.chat-msg[data-id="{message_id}"]')
    theirs = other.locator(f'.chat-msg[data-id="{message_id}"]')
    expect(theirs.locator(".chat-msg__body")).to_have_text("meet at 10")

    # Edit: the author's own message only; Enter saves; both pages show it, marked edited.
    mine.hover()
    mine.get_by_role("button", name="Edit").click()
    box = page.get_by_label("Edit your message")
    box.fill("meet at 11")
    box.press("Enter")
    expect(theirs.locator(".chat-msg__body")).to_have_text("meet at 11")
    expect(theirs.locator(".chat-msg__edited")).to_have_text("(edited)")
    expect(mine.locator(".chat-msg__edited")).to_have_text("(edited)")
    expect(theirs.get_by_role("button", name="Edit")).to_have_count(0)   # not theirs to edit

    # Delete, after a confirmation in place: a tombstone for everyone.
    mine.hover()
    mine.get_by_role("button", name="Delete").click()
    mine.locator(".chat-confirm").get_by_role("button", name="Delete").click()
    tomb = other.locator(".chat-msg.is-deleted")
    expect(tomb).to_have_count(1)
    expect(tomb.locator(".chat-msg__body")).to_have_text("This message was deleted.")
    expect(other.get_by_text("meet at 11")).to_have_count(0)
    expect(page.locator(".chat-msg.is-deleted")).to_have_count(1)


def test_a_first_dm_from_someone_new_appears_in_the_panel_live(people, server, device):
    sender, receiver = people.make("s"), people.make("r")
    page = people.page(receiver, device)
    panel = page.locator("#chat-panel")
    panel.get_by_role("button", name="Chat").click()
    expect(panel.get_by_role("link", name=f"@{sender}")).to_have_count(0)

    http = people.http(sender)
    dm = room_of(form(server, http, "/chat/dm", {"username": receiver}))
    say(server, http, dm, "hi, got a minute?")
    link = panel.get_by_role("link", name=f"@{sender}")
    expect(link).to_be_visible()
    expect(panel.locator(f'[data-room-unread="{dm}"]')).to_have_text("1")
    expect(panel.locator(".chat-panel__total")).to_have_text("1")
    if device == "desktop":
        link.click()
        expect(message(page, "hi, got a minute?")).to_have_count(1)
        expect(panel.locator(".chat-panel__total")).to_be_hidden()


def test_reading_a_room_in_one_tab_clears_its_badge_in_the_other(people, server):
    writer, reader = people.make("w"), people.make("r")
    http = people.http(writer)
    room = private_room(server, http, reader)
    context = people.context()
    first = people.page(reader, context=context)
    second = people.browsing.new_page(context)
    second.goto("/")
    wait_live(second)
    say(server, http, room, "one")
    say(server, http, room, "two")
    for tab in (first, second):
        expect(tab.locator(f'#chat-panel [data-room-unread="{room}"]')).to_have_text("2")
    first.goto(f"/chat/{room}")   # reading it here ...
    expect(message(first, "two")).to_have_count(1)
    total = second.locator(".chat-panel__total")   # ... clears it there, no reload
    expect(total).to_be_hidden()
    say(server, http, room, "three")
    expect(second.locator(f'#chat-panel [data-room-unread="{room}"]')).to_have_text("1")


def test_typing_stops_showing_the_moment_that_persons_message_arrives(people, server):
    writer, reader = people.make("w"), people.make("r")
    room = private_room(server, people.http(writer), reader)
    page = people.page(writer, path=f"/chat/{room}")
    other = people.page(reader, path=f"/chat/{room}")
    composer(page).press_sequentially("on my way")
    typing = other.locator(".chat-typing")
    expect(typing).to_have_text(f"{writer} is typing…")
    composer(page).press("Enter")
    expect(message(other, "on my way")).to_have_count(1)
    # Cleared by the message itself, in the same step, not by the 4-second expiry.
    assert other.locator(".chat-typing").is_hidden()


# ------------------------------------------------------------------------ reading a room


def age_message(server: LiveServer, message_id: int, days: int) -> None:
    """Move a stored message back in time, as if it had been sent ``days`` ago."""
    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.begin() as conn:
            when = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
            conn.execute(text("UPDATE chat_messages SET created_at = :when WHERE id = :id"),
                         {"when": when, "id": message_id})
    finally:
        engine.dispose()


def test_a_room_reads_like_a_conversation_and_only_new_messages_are_read_aloud(people, server):
    writer, reader = people.make("w"), people.make("r")
    http = people.http(writer)
    room = private_room(server, http, reader)

    # An empty room says so, and that this is its beginning; the box has a real label.
    page = people.page(reader, path=f"/chat/{room}")
    expect(page.locator(".chat-empty")).to_have_text("No messages yet. Say hello 👋")
    expect(page.locator(".chat-start")).to_contain_text("This is the start of #room-")
    expect(page.get_by_label("Message #room-")).to_be_editable()
    page.goto("/")

    old = say(server, http, room, "from the day before")
    age_message(server, old["id"], 1)
    say(server, http, room, "first today")
    say(server, http, room, f"second today, @{reader} look")
    page.goto(f"/chat/{room}")
    wait_live(page)
    expect(page.locator(".chat-divider")).to_have_text(["Yesterday", "New messages", "Today"])
    second = message(page, "second today")
    expect(second).to_have_class(re.compile(r"(^|\s)chat-msg--grouped(\s|$)"))
    expect(second).to_have_class(re.compile(r"(^|\s)is-mention-me(\s|$)"))
    expect(second.locator(".chat-mention--me")).to_have_text(f"@{reader}")
    expect(message(page, "first today")).not_to_have_class(re.compile("chat-msg--grouped"))
    # Loading history reads nothing aloud; a new message from someone else is announced.
    announcer = page.locator(".chat-announcer")
    expect(announcer).to_have_text("")
    say(server, http, room, "a live one")
    expect(message(page, "a live one")).to_have_count(1)
    expect(announcer).to_contain_text(f"{writer}: a live one")

    # @-autocomplete offers the room's members, by keyboard.
    composer(page).press_sequentially(f"thanks @{writer[:3]}")
    option = page.get_by_role("option", name=f"@{writer}")
    expect(option).to_be_visible()
    expect(option).to_have_attribute("aria-selected", "true")
    composer(page).press("Enter")
    expect(composer(page)).to_have_value(f"thanks @{writer} ")
    expect(composer(page)).to_be_focused()
    expect(option).to_be_hidden()


def test_the_keyboard_reaches_the_composer_and_any_message_without_a_mouse(people, server):
    writer, reader = people.make("w"), people.make("r")
    http = people.http(writer)
    room = private_room(server, http, reader)
    for n in range(6):
        say(server, http, room, f"note {n}")
    page = people.page(writer, path=f"/chat/{room}")
    messages = page.locator(".chat-messages")
    messages.focus()
    # Six messages with Edit and Delete each, yet one Tab from the list reaches the box.
    page.keyboard.press("Tab")
    expect(composer(page)).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(messages).to_be_focused()
    page.keyboard.press("ArrowUp")
    last = message(page, "note 5")
    expect(last).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(message(page, "note 4")).to_be_focused()
    page.keyboard.press("End")
    expect(last).to_be_focused()
    page.keyboard.press("Tab")
    expect(last.get_by_role("button", name="Edit")).to_be_focused()
    page.keyboard.press("Enter")
    box = page.get_by_label("Edit your message")
    expect(box).to_be_focused()
    expect(box).to_have_value("note 5")
    page.keyboard.press("Escape")
    expect(box).to_have_count(0)
    expect(composer(page)).to_be_focused()
    # ArrowUp in the empty box edits one's last message, as in Slack.
    page.keyboard.press("ArrowUp")
    expect(page.get_by_label("Edit your message")).to_have_value("note 5")
