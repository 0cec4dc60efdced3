"""Read once, everywhere: opening what a notification points at reads it, in every tab; reading
what is already read says nothing; ids from hostile clients get a 4xx, never a 500."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.chat.signals import room_read
from app.extensions import db
from app.models import User
from app.notifications import announcements, realtime_handlers, service
from app.notifications.models import Notification
from flask_tidings import RealtimeError
from tests.support.forms import csrf_token_from

#: A 20-digit id: bigger than any database integer.
HUGE = 10**19 + 7


def user(name: str) -> User:
    return db.session.scalar(select(User).where(User.username == name))


def events(app, stream: str) -> list[dict]:
    store = app.extensions["realtime"].store
    return [json.loads(payload) for _, payload in store.read_since(stream, 0, 1000)]


def read_events(app, name: str) -> list[dict]:
    with app.app_context():
        stream = f"user:{user(name).id}"
    return [e["data"] for e in events(app, stream) if e["type"] == "notification.read"]


def note(app, title: str, link: str | None = None, name: str = "alice") -> int:
    with app.app_context():
        return service.create_notification(user(name), "mention", title, link=link).id


def is_read(app, note_id: int) -> bool:
    with app.app_context():
        return db.session.get(Notification, note_id).read_at is not None


def test_opening_the_page_a_notification_links_to_reads_it_before_the_page_renders(
    app, client, auth
):
    """bob mentioned alice in a room; she opens the room from the bell, a link or by hand."""
    mention = note(app, "bob mentioned you in #general", link="/notifications/preferences")
    other = note(app, "Something else", link="/notifications")
    auth.login()
    page = client.get("/notifications/preferences").get_data(as_text=True)

    assert is_read(app, mention) and not is_read(app, other)
    # The page that opens already counts it read: the bell shows 1, not 2.
    assert 'data-count="1"' in page
    assert read_events(app, "alice") == [{"ids": [mention], "unread": 1}]

    # Opening it again changes nothing and tells nobody anything.
    client.get("/notifications/preferences")
    assert read_events(app, "alice") == [{"ids": [mention], "unread": 1}]


def test_a_link_with_a_fragment_is_read_by_opening_its_page(app, client, auth):
    anchored = note(app, "Reply in the thread", link="/notifications/preferences#toast_dm")
    lookalike = note(app, "Another page", link="/notifications/preferences-old")
    auth.login()
    client.get("/notifications/preferences")
    assert is_read(app, anchored) and not is_read(app, lookalike)


def test_json_requests_and_other_peoples_pages_read_nothing(app, client, auth):
    mine = note(app, "Mine", link="/notifications/preferences")
    auth.login()
    client.get("/notifications/preferences", headers={"Accept": "application/json"})
    assert not is_read(app, mine)
    theirs = note(app, "Boss's", link="/notifications", name="boss")
    client.get("/notifications")
    assert not is_read(app, theirs)


def test_reading_a_room_in_the_chat_reads_its_notifications(app):
    """The chat sends room_read when alice reads #general in the panel, without a page load."""
    dm = note(app, "Message from bob", link="/chat/7")
    elsewhere = note(app, "Message in another room", link="/chat/70")
    with app.app_context():
        alice_id = user("alice").id
        room_read.send(app, user_id=alice_id, room_id=7)
    assert is_read(app, dm) and not is_read(app, elsewhere)
    assert read_events(app, "alice") == [{"ids": [dm], "unread": 1}]
    # Sent again (every chat.read sends it): nothing left to read, nothing published.
    with app.app_context():
        room_read.send(app, user_id=alice_id, room_id=7)
    # And from a plain thread without an app context, the way a job might.
    room_read.send(app, user_id=alice_id, room_id=70)
    assert is_read(app, elsewhere)
    assert len(read_events(app, "alice")) == 2


def test_marking_read_what_is_already_read_stores_no_event(app):
    first, second = note(app, "One"), note(app, "Two")
    with app.app_context():
        alice = user("alice")
        assert service.mark_read(alice, [first]) == [first]
        for _ in range(5):
            assert service.mark_read(alice, [first]) == []
        assert service.mark_all_read(alice) == 1
        for _ in range(5):
            assert service.mark_all_read(alice) == 0
    assert read_events(app, "alice") == [{"ids": [first], "unread": 1},
                                         {"all": True, "unread": 0}]
    assert is_read(app, second)


def test_dismissing_twice_stores_one_event(app):
    with app.app_context():
        shown = announcements.publish(user("boss"), "Once is enough")
        alice = user("alice")
        for _ in range(4):
            announcements.dismiss(alice, shown.id)
        stream = f"user:{alice.id}"
    assert [e["type"] for e in events(app, stream)] == ["announcement.dismissed"]


@pytest.mark.parametrize("url", [
    f"/notifications?page={HUGE}", "/notifications?page=0", "/notifications?page=-1",
    "/notifications?page=two", "/notifications?page=%C2%B2",
])
def test_a_page_number_out_of_range_is_a_400(client, auth, url):
    auth.login()
    response = client.get(url)
    assert response.status_code == 400
    assert "page is a page number" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", [f"/notifications/{HUGE}/read", f"/announcements/{HUGE}/dismiss",
                                 "/notifications/2147483648/read"])
def test_posting_to_a_20_digit_id_is_a_404(client, auth, url):
    auth.login()
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post(url, headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == 404


@pytest.mark.parametrize(("handler", "data"), [
    (realtime_handlers.mark_read, {"ids": [HUGE]}),
    (realtime_handlers.mark_read, {"ids": [1, HUGE]}),
    (realtime_handlers.dismiss, {"id": HUGE}),
    (realtime_handlers.seen, {"id": HUGE}),
])
def test_socket_commands_with_a_20_digit_id_answer_not_found(app, handler, data):
    with app.test_request_context():
        conn = SimpleNamespace(identity=SimpleNamespace(user_id=str(user("alice").id)))
        with pytest.raises(RealtimeError) as raised:
            handler(conn, data)
    assert raised.value.code == "not_found"
