"""Chat stories over the test client: rooms, history pages, escaping, limits, moderation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.chat import service
from app.chat.demo import seed_demo
from app.chat.models import Message, Room, RoomMember
from app.chat.service import ChatError
from app.extensions import db
from app.models import User


def add_user(username: str, role: str = "user") -> User:
    # These users never log in: skip the deliberately slow password hash.
    user = User(username=username, role=role, password_hash="!")
    db.session.add(user)
    db.session.commit()
    return user


def user(username: str) -> User:
    return db.session.scalar(select(User).where(User.username == username))


def post_form(client, auth, url: str, data: dict, page: str = "/chat/"):
    return client.post(url, data={"csrf_token": auth.csrf_token(page), **data})


@pytest.fixture
def rooms(app):
    """alice's public room "lobby" and a private room "secret" of boss and carol."""
    with app.app_context():
        add_user("carol")
        lobby = service.create_room(user("alice"), "lobby", "public")
        secret = service.create_room(user("boss"), "secret", "private", invite="carol")
        return {"lobby": lobby.id, "secret": secret.id}


def bulk_messages(app, room_id: int, count: int) -> list[int]:
    with app.app_context():
        alice = user("alice")
        rows = [Message(room_id=room_id, user_id=alice.id, body=f"m{i}") for i in range(count)]
        db.session.add_all(rows)
        db.session.commit()
        return [m.id for m in rows]


def test_older_history_pages_return_every_message_exactly_once(app, client, auth, rooms):
    ids = bulk_messages(app, rooms["lobby"], 123)
    with app.app_context():
        # A deleted message is in no page at all.
        service.delete_message(user("boss"), ids[60])
    auth.login()
    seen: list[int] = []
    before = None
    while True:
        url = f"/chat/{rooms['lobby']}/messages?limit=50" + (f"&before={before}" if before else "")
        page = client.get(url, headers={"Accept": "application/json"}).get_json()
        batch = [m["id"] for m in page["messages"]]
        assert batch == sorted(batch)  # oldest first within a page
        seen = batch + seen
        if not page["has_more"]:
            break
        before = batch[0]
    expected = [i for i in ids if i != ids[60]]
    assert seen == expected
    assert len(set(seen)) == len(seen)


def test_opening_a_room_shows_the_last_50_and_the_stream_head(app, client, auth, rooms):
    ids = bulk_messages(app, rooms["lobby"], 60)
    auth.login()
    html = client.get(f"/chat/{rooms['lobby']}").get_data(as_text=True)
    assert f'data-id="{ids[-1]}"' in html and f'data-id="{ids[10]}"' in html
    assert f'data-id="{ids[9]}"' not in html
    assert 'data-room-head="0"' in html
    assert 'data-has-more="true"' in html


def test_a_script_message_renders_as_text(app, client, auth, rooms):
    with app.app_context():
        service.post_message(user("alice").id, rooms["lobby"], '<script>alert("x")</script>')
    auth.login()
    html = client.get(f"/chat/{rooms['lobby']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert '<script>alert("x")' not in html


def test_a_private_room_is_hidden_from_non_members(app, client, auth, rooms):
    auth.login()  # alice is not in "secret"
    assert client.get(f"/chat/{rooms['secret']}").status_code == 404
    response = client.get(f"/chat/{rooms['secret']}/messages",
                          headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert client.get("/chat/99999").status_code == 404
    before = count_messages(app)
    response = post_form(client, auth, f"/chat/{rooms['secret']}/messages", {"body": "let me in"})
    assert response.status_code == 404
    assert count_messages(app) == before
    page = client.get("/chat/").get_data(as_text=True)
    assert "lobby" in page and "secret" not in page


def count_messages(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Message.id)))


def test_creating_rooms_and_a_dm_from_the_chat_page(app, client, auth):
    with app.app_context():
        add_user("bob")
    auth.login()
    response = post_form(client, auth, "/chat/rooms",
                         {"name": "plans", "kind": "private", "invite": "bob"})
    assert response.status_code == 302
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.name == "plans"))
        members = set(db.session.scalars(select(User.username).join(
            RoomMember, RoomMember.user_id == User.id).where(RoomMember.room_id == room.id)))
        assert room.kind == "private" and members == {"alice", "bob"}
    first = post_form(client, auth, "/chat/dm", {"username": "bob"})
    again = post_form(client, auth, "/chat/dm", {"username": "bob"})
    assert first.headers["Location"] == again.headers["Location"]  # one DM room per pair
    unknown = post_form(client, auth, "/chat/rooms",
                        {"name": "x", "kind": "private", "invite": "nobody"},)
    assert unknown.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Room).where(Room.name == "x")) is None


def test_forms_without_a_csrf_token_are_refused(client, auth):
    auth.login()
    assert client.post("/chat/rooms", data={"name": "nope", "kind": "public"}).status_code == 400


@pytest.mark.parametrize(("body", "code"), [
    ("   ", "empty"),
    ("x" * 2001, "too_long"),
    (42, "bad_message"),
])
def test_bad_bodies_are_refused_with_a_clear_code(app, rooms, body, code):
    with app.app_context(), pytest.raises(ChatError) as refused:
        service.post_message(user("alice").id, rooms["lobby"], body)
    assert refused.value.code == code


def test_a_flood_of_messages_is_rate_limited(app, rooms):
    with app.app_context():
        alice = user("alice").id
        for i in range(service.RATE_COUNT):
            service.post_message(alice, rooms["lobby"], f"quick {i}")
        with pytest.raises(ChatError) as refused:
            service.post_message(alice, rooms["lobby"], "one too many")
        assert refused.value.code == "rate_limited"


def test_unread_counts_follow_the_read_position(app, client, auth, rooms):
    with app.app_context():
        boss, carol = user("boss").id, user("carol").id
        for i in range(3):
            service.post_message(boss, rooms["secret"], f"hello {i}")
        assert service.unread_counts(carol) == {rooms["secret"]: 3}
        assert service.unread_counts(boss) == {}  # your own messages are never unread
        room = db.session.get(Room, rooms["secret"])
        service.mark_read(room, carol)
        assert service.unread_counts(carol) == {}


def test_the_panel_is_on_every_page_with_unread_counts(app, client, auth, rooms):
    with app.app_context():
        # alice created "lobby", so she is a member; boss's two messages are unread for her.
        service.post_message(user("boss").id, rooms["lobby"], "hi all")
        service.post_message(user("boss").id, rooms["lobby"], "anyone?")
    auth.login()
    html = client.get("/").get_data(as_text=True)
    assert 'id="chat-panel"' in html
    assert f'data-room-unread="{rooms["lobby"]}">2<' in html


def test_admins_delete_messages_by_form_and_others_cannot(app, client, auth, rooms):
    with app.app_context():
        data = service.post_message(user("alice").id, rooms["lobby"], "regrettable")
    auth.login()
    assert post_form(client, auth, f"/chat/messages/{data['id']}/delete", {}).status_code == 403
    auth.logout()
    auth.login("boss", "boss-password-1")
    assert post_form(client, auth, f"/chat/messages/{data['id']}/delete", {}).status_code == 302
    html = client.get(f"/chat/{rooms['lobby']}").get_data(as_text=True)
    assert "regrettable" not in html
    with app.app_context():
        assert db.session.get(Message, data["id"]).deleted_by == user("boss").id


def test_the_demo_seed_creates_general_once(app):
    with app.app_context():
        add_user("bob")
        add_user("alice2")
        room = seed_demo()
        assert room is not None and room.name == "general"
        assert seed_demo().id == room.id
        assert db.session.scalar(select(func.count(Message.id)).where(
            Message.room_id == room.id)) == 2


def test_the_rate_window_slides(app, rooms):
    with app.app_context():
        alice = user("alice").id
        for i in range(service.RATE_COUNT):
            service.post_message(alice, rooms["lobby"], f"quick {i}")
        # Age those messages past the window: the next one is welcome again.
        for message in db.session.scalars(select(Message)):
            message.created_at = message.created_at - timedelta(seconds=service.RATE_WINDOW + 1)
        db.session.commit()
        assert service.post_message(alice, rooms["lobby"], "later")["body"] == "later"


def test_mentions_and_direct_messages_notify_their_target(app, rooms):
    from app.notifications.models import Notification

    with app.app_context():
        bob = add_user("bob")
        boss = user("boss")
        service.join(db.session.get(Room, rooms["lobby"]), boss.id)
        # boss is a member of "lobby", carol is not: only boss is notified.
        service.post_message(user("alice").id, rooms["lobby"], "hey @boss and @carol, look")
        dm = service.open_dm(user("alice"), "bob")
        service.post_message(user("alice").id, dm.id, "psst")
        found = {(n.user_id, n.kind, n.link) for n in db.session.scalars(select(Notification))}
        assert found == {(boss.id, "mention", f"/chat/{rooms['lobby']}"),
                         (bob.id, "dm", f"/chat/{dm.id}")}


def test_presence_without_redis_expires_entries_in_the_database(app, rooms):
    import time

    from app.chat.presence import DatabasePresence

    store = DatabasePresence()
    room = rooms["lobby"]
    with app.app_context():
        alice, boss = user("alice").id, user("boss").id
        store.touch([(room, alice, "w1-1"), (room, boss, "w2-1")], time.time() + 30)
        assert store.online(room) == {alice, boss}
        # boss's worker died: nobody refreshed his entry and its expiry passed.
        store.touch([(room, boss, "w2-1")], time.time() - 1)
        assert store.online(room) == {alice}
        store.remove([(room, alice, "w1-1")])
        assert store.online(room) == set()


def test_listed_rooms_carry_their_stream_head_for_live_badges(app, client, auth, rooms):
    with app.app_context():
        # Two messages in alice's "lobby" move its stream head to 2; boss's public "town" is
        # listed for alice too, but she is not a member, so it has no badge to keep live.
        service.post_message(user("boss").id, rooms["lobby"], "hi all")
        service.post_message(user("boss").id, rooms["lobby"], "anyone?")
        town = service.create_room(user("boss"), "town", "public").id
    auth.login()
    html = client.get("/").get_data(as_text=True)
    lobby_item = html.split(f'data-room-link="{rooms["lobby"]}"', 1)[0].rsplit("<li", 1)[1]
    town_item = html.split(f'data-room-link="{town}"', 1)[0].rsplit("<li", 1)[1]
    assert 'data-unread-head="2"' in lobby_item
    assert "data-unread-head" not in town_item
