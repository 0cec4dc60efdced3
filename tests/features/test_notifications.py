"""A user's notifications: the bell, the inbox, marking read, preferences and ``flask notify``."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import User
from app.notifications import service
from app.notifications.demo import seed_demo
from app.notifications.models import Notification
from tests.support.forms import csrf_token_from

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def user(name: str) -> User:
    return db.session.scalar(select(User).where(User.username == name))


def events(app, stream: str) -> list[dict]:
    """What the durable log holds for a stream, as the wire would carry it."""
    store = app.extensions["realtime"].store
    return [json.loads(payload) for _, payload in store.read_since(stream, 0, 1000)]


def notify_alice(app, count: int = 1, **kwargs) -> list[int]:
    with app.app_context():
        alice = user("alice")
        return [service.create_notification(alice, kwargs.get("kind", "system"),
                                            kwargs.get("title", f"Note {i}"),
                                            body=kwargs.get("body"), link=kwargs.get("link")).id
                for i in range(count)]


def test_a_new_notification_is_stored_then_pushed_with_the_unread_count(app):
    notify_alice(app, 2)
    with app.app_context():
        alice = user("alice")
        assert service.unread_count(alice) == 2
        pushed = events(app, f"user:{alice.id}")
    assert [e["type"] for e in pushed] == ["notification", "notification"]
    assert pushed[-1]["data"]["title"] == "Note 1"
    assert pushed[-1]["data"]["unread"] == 2
    assert pushed[-1]["data"]["read"] is False


def test_the_bell_shows_the_unread_count_and_the_latest_five(app, client, auth):
    notify_alice(app, 7)
    auth.login()
    html = client.get("/").get_data(as_text=True)
    assert 'data-count="7"' in html
    bell = html.split('id="bell-list"', 1)[1].split("</ul>", 1)[0]
    assert bell.count("data-notification-id=") == 5
    assert "Note 6" in bell and "Note 1" not in bell


def test_the_inbox_pages_twenty_at_a_time(app, client, auth):
    notify_alice(app, 45)
    auth.login()
    first = client.get("/notifications").get_data(as_text=True)
    third = client.get("/notifications?page=3").get_data(as_text=True)
    inbox = lambda html: html.split('id="inbox-list"', 1)[1].split("</ul>", 1)[0]  # noqa: E731
    assert inbox(first).count("data-notification-id=") == 20
    assert "Note 44" in inbox(first) and "Page 1 of 3" in first
    assert inbox(third).count("data-notification-id=") == 5
    assert "Note 0" in inbox(third)


def test_the_unread_filter_hides_what_was_read(app, client, auth):
    ids = notify_alice(app, 3)
    auth.login()
    token = csrf_token_from(client.get("/notifications").get_data(as_text=True))
    response = client.post(f"/notifications/{ids[1]}/read", data={"csrf_token": token})
    assert response.status_code == 302
    unread = client.get("/notifications?filter=unread").get_data(as_text=True)
    listed = unread.split('id="inbox-list"', 1)[1].split("</ul>", 1)[0]
    assert f'data-notification-id="{ids[0]}"' in listed
    assert f'data-notification-id="{ids[1]}"' not in listed
    everything = client.get("/notifications").get_data(as_text=True)
    assert f'data-notification-id="{ids[1]}"' in everything
    with app.app_context():
        assert service.unread_count(user("alice")) == 2
        read_events = [e for e in events(app, f"user:{user('alice').id}")
                       if e["type"] == "notification.read"]
    assert read_events[-1]["data"] == {"ids": [ids[1]], "unread": 2}


def test_mark_all_read_over_fetch_answers_json_and_tells_every_tab(app, client, auth):
    notify_alice(app, 4)
    auth.login()
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post("/notifications/read-all", headers={
        "X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 200
    assert response.get_json()["unread"] == 0 and response.get_json()["changed"] == 4
    with app.app_context():
        last = events(app, f"user:{user('alice').id}")[-1]
    assert last["type"] == "notification.read" and last["data"] == {"all": True, "unread": 0}


def test_marking_read_needs_the_csrf_token(app, client, auth):
    [note] = notify_alice(app)
    auth.login()
    assert client.post(f"/notifications/{note}/read").status_code == 400
    with app.app_context():
        assert service.unread_count(user("alice")) == 1


def test_nobody_can_mark_or_see_another_users_notification(app, client, auth):
    with app.app_context():
        theirs = service.create_notification(user("boss"), "system", "Boss only").id
    auth.login()  # as alice
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post(f"/notifications/{theirs}/read", data={"csrf_token": token})
    assert response.status_code == 404
    assert "Boss only" not in client.get("/notifications").get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Notification, theirs).read_at is None
        with pytest.raises(service.NotFound):
            service.mark_read(user("alice"), [theirs])


def test_marking_a_mix_of_own_and_foreign_ids_changes_nothing(app):
    [mine] = notify_alice(app)
    with app.app_context():
        theirs = service.create_notification(user("boss"), "system", "x").id
        with pytest.raises(service.NotFound):
            service.mark_read(user("alice"), [mine, theirs])
        assert service.unread_count(user("alice")) == 1


@pytest.mark.parametrize("page", ["/notifications", "/"])
def test_titles_and_bodies_are_text_never_markup(app, client, auth, page):
    notify_alice(app, title=f"Hi {SCRIPT}", body=f"Look {IMG}")
    auth.login()
    html = client.get(page).get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert SCRIPT not in html and IMG not in html


@pytest.mark.parametrize(("link", "stored"), [
    ("/chat/rooms/3", "/chat/rooms/3"),
    ("https://example.com/build/7", "https://example.com/build/7"),
    ("", None),
])
def test_links_may_be_site_paths_or_web_urls(app, link, stored):
    [note] = notify_alice(app, link=link)
    with app.app_context():
        assert db.session.get(Notification, note).link == stored


@pytest.mark.parametrize("link", [
    "javascript:alert(1)", "data:text/html,hi", "//evil.example/x", "/\\evil.example",
    "ftp://example.com/file", "https://", "vbscript:x",
])
def test_links_that_could_run_code_or_leave_the_site_in_disguise_are_refused(app, link):
    with pytest.raises(ValueError):
        notify_alice(app, link=link)
    with app.app_context():
        assert service.unread_count(user("alice")) == 0


def test_preferences_choose_which_kinds_pop_up_live(app, client, auth):
    auth.login()
    page = client.get("/notifications/preferences")
    assert page.status_code == 200
    kinds = 'data-toast-kinds="welcome mention dm announcement system"'
    assert kinds in page.get_data(as_text=True)
    token = csrf_token_from(page.get_data(as_text=True))
    response = client.post("/notifications/preferences", data={
        "csrf_token": token, "toast_mention": "on", "toast_system": "on"}, follow_redirects=True)
    assert 'data-toast-kinds="mention system"' in response.get_data(as_text=True)
    with app.app_context():
        prefs = service.preferences(user("alice"))
    assert prefs == {"welcome": False, "mention": True, "dm": False, "announcement": False,
                     "system": True}


def test_the_inbox_needs_a_login(client):
    response = client.get("/notifications")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_flask_notify_sends_from_the_shell(app, runner):
    result = runner.invoke(args=["notify", "alice", "Deploy done", "--body", "v2 is live",
                                 "--link", "/notifications", "--kind", "system"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        [note] = db.session.scalars(select(Notification)).all()
        assert (note.title, note.body, note.link, note.kind) == (
            "Deploy done", "v2 is live", "/notifications", "system")
        assert events(app, f"user:{user('alice').id}")[-1]["data"]["title"] == "Deploy done"


@pytest.mark.parametrize(("args", "message"), [
    (["notify", "nobody", "Hi"], "No user 'nobody'"),
    (["notify", "alice", "Hi", "--link", "javascript:alert(1)"], "must be a path"),
    (["notify", "alice", "Hi", "--kind", "shouting"], "Invalid value"),
])
def test_flask_notify_explains_mistakes(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert message in result.output


def test_registering_welcomes_the_new_account(app, client):
    token = csrf_token_from(client.get("/auth/register").get_data(as_text=True))
    response = client.post("/auth/register", data={
        "csrf_token": token, "username": "carol", "password": "carol-password-1",
        "confirm": "carol-password-1"})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        [note] = db.session.scalars(select(Notification).where(
            Notification.user_id == user("carol").id)).all()
    assert note.kind == "welcome"


def test_seed_demo_welcomes_each_demo_account_once_and_no_one_else(app):
    with app.app_context():
        # "boss" is not a demo account: a restart must not do work for every account there is.
        assert seed_demo(["alice", "bob", "admin"]) == 1
        assert seed_demo(["alice", "bob", "admin"]) == 0
        assert service.unread_count(user("alice")) == 1
        assert service.unread_count(user("boss")) == 0
