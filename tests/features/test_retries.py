"""Double submits and retries after a lost answer create one thing (issue 17).

A form carries a one-time key generated when it was rendered; a script sends an
``Idempotency-Key`` header. A second request with the same key finds the first one's event and
answers with the same result. An answer that fails after the commit says the thing was saved.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.notifications import announcements
from app.notifications.models import Announcement
from tests.support.forms import csrf_token_from, hidden_value


def stored_events(app, stream: str) -> list[dict]:
    store = app.extensions["realtime"].store
    return [json.loads(payload) for _, payload in store.read_since(stream, 0, 1000)]


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def compose_form(client, **fields) -> dict:
    """The compose form as the browser holds it: its CSRF token and its one-time key."""
    page = client.get("/admin/announcements").get_data(as_text=True)
    form = {"csrf_token": csrf_token_from(page),
            "idempotency_key": hidden_value(page, "idempotency_key"),
            "title": "Hello", "body": "", "level": "info", "audience": "all", "role": "user",
            "usernames": "", "expires_minutes": ""}
    form.update(fields)
    return form


def test_an_admin_double_submits_the_announcement_form_one_banner_one_event(app, client, auth):
    auth.login("boss", "boss-password-1")
    form = compose_form(client, title="Maintenance at noon")
    first = client.post("/admin/announcements", data=form)
    second = client.post("/admin/announcements", data=form)  # the second click
    assert first.status_code == second.status_code == 302
    with app.app_context():
        assert count(Announcement) == 1
    assert [e["data"]["title"] for e in stored_events(app, "broadcast")] == ["Maintenance at noon"]
    page = client.get("/admin/announcements").get_data(as_text=True)
    assert page.count("Announcement sent to 2 account(s).") == 2  # the same answer, twice
    # The page the redirect shows has a fresh key: the next announcement is a new one.
    client.post("/admin/announcements", data=compose_form(client, title="Back to normal"))
    with app.app_context():
        assert count(Announcement) == 2


def test_each_rendering_of_the_compose_form_has_its_own_key(client, auth):
    auth.login("boss", "boss-password-1")
    keys = {hidden_value(client.get("/admin/announcements").get_data(as_text=True),
                         "idempotency_key") for _ in range(3)}
    assert len(keys) == 3


def test_a_script_retrying_with_its_idempotency_key_header_announces_once(app, client, auth):
    auth.login("boss", "boss-password-1")
    form = compose_form(client, title="Deploy", audience="users", usernames="alice, boss")
    del form["idempotency_key"]
    headers = {"Idempotency-Key": "deploy-2026-11-30"}
    for _ in range(3):
        assert client.post("/admin/announcements", data=form, headers=headers).status_code == 302
    with app.app_context():
        assert count(Announcement) == 1
        ids = [u.id for u in announcements.parse_usernames("alice, boss")[0]]
    for user_id in ids:
        assert [e["data"]["title"] for e in stored_events(app, f"user:{user_id}")] == ["Deploy"]


def test_a_form_without_a_key_still_works_as_before(app, client, auth):
    """A page rendered before the upgrade has no key: it publishes, with no protection."""
    auth.login("boss", "boss-password-1")
    form = compose_form(client)
    del form["idempotency_key"]
    client.post("/admin/announcements", data=form)
    client.post("/admin/announcements", data=form)
    with app.app_context():
        assert count(Announcement) == 2


@pytest.mark.parametrize("key", ["has space", "x" * 101, "ключ"])
def test_a_malformed_idempotency_key_is_refused_before_anything_is_stored(app, client, auth,
                                                                          key):
    auth.login("boss", "boss-password-1")
    form = compose_form(client)
    response = client.post("/admin/announcements", data=form,
                           headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert response.status_code == 400
    with app.app_context():
        assert count(Announcement) == 0


def test_keys_belong_to_their_sender(app, client, auth):
    """Another admin using the same key (by chance, or having seen it) publishes their own."""
    auth.login("boss", "boss-password-1")
    form = compose_form(client, title="From boss")
    client.post("/admin/announcements", data=form)
    with app.app_context():
        from app.models import User
        other = User(username="chief", role="admin")
        other.set_password("chief-password-1")
        db.session.add(other)
        db.session.commit()
    auth.logout()
    auth.login("chief", "chief-password-1")
    mine = compose_form(client, title="From chief")
    mine["idempotency_key"] = form["idempotency_key"]
    client.post("/admin/announcements", data=mine)
    with app.app_context():
        assert count(Announcement) == 2


def test_an_answer_that_fails_after_the_commit_says_the_announcement_was_saved(
    app, client, auth, monkeypatch
):
    auth.login("boss", "boss-password-1")
    form = compose_form(client, title="Saved anyway")
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as production does

    def lost(*args, **kwargs):
        raise ConnectionError("the connection dropped while answering")

    monkeypatch.setattr("app.admin.announcements.flash", lost)
    response = client.post("/admin/announcements", data=form)
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Your announcement was saved and will be delivered" in page
    assert "Something went wrong" not in page
    as_json = client.post("/admin/announcements", data=form,
                          headers={"Accept": "application/json"})
    error = as_json.get_json()["error"]
    assert error["saved"] is True and "was saved" in error["message"]
    with app.app_context():
        assert count(Announcement) == 1  # the retry found the first one


def test_an_error_before_the_commit_does_not_claim_anything_was_saved(app, client, auth,
                                                                      monkeypatch):
    auth.login("boss", "boss-password-1")
    form = compose_form(client)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(*args, **kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(announcements, "audience_user_ids", broken)
    response = client.post("/admin/announcements", data=form)
    assert response.status_code == 500
    assert "was saved" not in response.get_data(as_text=True)


def chat_room_page(client, room_id: int) -> str:
    return client.get(f"/chat/{room_id}").get_data(as_text=True)


@pytest.fixture
def lobby(app):
    with app.app_context():
        from app.chat import service
        from app.models import User
        alice = db.session.scalar(select(User).where(User.username == "alice"))
        return service.create_room(alice, "lobby", "public").id


def test_a_double_submitted_message_without_javascript_posts_once(app, client, auth, lobby):
    from app.chat.models import Message
    auth.login()
    page = chat_room_page(client, lobby)
    form = {"csrf_token": csrf_token_from(page), "client_id": hidden_value(page, "client_id"),
            "body": "only once"}
    assert client.post(f"/chat/{lobby}/messages", data=form).status_code == 302
    assert client.post(f"/chat/{lobby}/messages", data=form).status_code == 302
    with app.app_context():
        assert count(Message) == 1
    assert [e["data"]["body"] for e in stored_events(app, f"room:{lobby}")] == ["only once"]
    # The next rendering carries a new id: the next message is a new one.
    assert hidden_value(chat_room_page(client, lobby), "client_id") != form["client_id"]


def test_a_script_resending_a_message_with_its_idempotency_key_gets_the_same_message(
    app, client, auth, lobby
):
    auth.login()
    token = csrf_token_from(chat_room_page(client, lobby))
    headers = {"Accept": "application/json", "X-CSRFToken": token, "Idempotency-Key": "m-1"}
    first = client.post(f"/chat/{lobby}/messages", data={"body": "hi"}, headers=headers)
    again = client.post(f"/chat/{lobby}/messages", data={"body": "hi"}, headers=headers)
    assert first.get_json()["message"]["id"] == again.get_json()["message"]["id"]
    assert len(stored_events(app, f"room:{lobby}")) == 1


def test_a_user_double_submits_the_new_room_form_one_room_one_budget_token(
    app, client, auth, monkeypatch
):
    from app.chat.models import Room
    app.config["CHAT_ROOMS_PER_HOUR"] = 1  # a second room would be refused: a retry must not
    auth.login()
    page = client.get("/chat/").get_data(as_text=True)
    form = {"csrf_token": csrf_token_from(page), "name": "book club", "kind": "public",
            "idempotency_key": hidden_value(page, "idempotency_key")}
    first = client.post("/chat/rooms", data=form)
    second = client.post("/chat/rooms", data=form)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]  # the same room
    with app.app_context():
        assert count(Room) == 1
        alice_id = db.session.scalar(select(Room.created_by))
    rooms_told = [e for e in stored_events(app, f"user:{alice_id}") if e["type"] == "chat.room"]
    assert len(rooms_told) == 1


def test_a_message_saved_before_its_mention_notification_failed_says_it_was_saved(
    app, client, auth, lobby, monkeypatch
):
    from app.chat import service
    auth.login()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(*args, **kwargs):
        raise ConnectionError("the database went away after the commit")

    monkeypatch.setattr(service, "_notify", broken)
    page = chat_room_page(client, lobby)
    response = client.post(f"/chat/{lobby}/messages", headers={"Accept": "application/json"},
                           data={"csrf_token": csrf_token_from(page), "body": "hello @boss",
                                 "client_id": hidden_value(page, "client_id")})
    assert response.status_code == 500
    assert response.get_json()["error"]["saved"] is True
    assert "Your message was saved" in response.get_json()["error"]["message"]


def test_a_cron_job_retried_with_its_key_announces_once(app, runner):
    args = ["broadcast", "Backups tonight", "--key", "backup-2026-11-30"]
    first = runner.invoke(args=args)
    again = runner.invoke(args=args)
    assert first.exit_code == again.exit_code == 0, again.output
    assert first.output == again.output  # "Announcement 1 sent to 2 account(s)." both times
    with app.app_context():
        assert count(Announcement) == 1
    assert len(stored_events(app, "broadcast")) == 1
    refused = runner.invoke(args=["broadcast", "x", "--key", "has space"])
    assert refused.exit_code != 0 and "idempotency key" in refused.output


def test_a_script_reusing_one_key_on_two_forms_gets_both_things(app, client, auth):
    """The key is scoped to what it creates: the room form never answers with the banner."""
    from app.chat.models import Room
    auth.login("boss", "boss-password-1")
    headers = {"Idempotency-Key": "same-key"}
    form = compose_form(client, title="For me", audience="users", usernames="boss")
    del form["idempotency_key"]
    assert client.post("/admin/announcements", data=form, headers=headers).status_code == 302
    page = client.get("/chat/").get_data(as_text=True)
    room = client.post("/chat/rooms", headers=headers, data={
        "csrf_token": csrf_token_from(page), "name": "ops", "kind": "public"})
    assert room.status_code == 302
    with app.app_context():
        assert count(Announcement) == 1 and count(Room) == 1
