"""Admins announce to everyone, a role or chosen users; banners show until dismissed or expired."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import User, utcnow
from app.notifications import announcements
from app.notifications.models import Announcement, AnnouncementDismissal
from app.notifications.service import NotFound
from tests.support.forms import csrf_token_from

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def user(name: str) -> User:
    return db.session.scalar(select(User).where(User.username == name))


def add_user(name: str, role: str = "user") -> User:
    account = User(username=name, role=role)
    account.set_password(f"{name}-password-1")
    db.session.add(account)
    db.session.commit()
    return account


def events(app, stream: str) -> list[dict]:
    store = app.extensions["realtime"].store
    return [json.loads(payload) for _, payload in store.read_since(stream, 0, 1000)]


def compose(client, **fields):
    token = csrf_token_from(client.get("/admin/announcements").get_data(as_text=True))
    form = {"csrf_token": token, "title": "Hello", "body": "", "level": "info", "audience": "all",
            "role": "user", "usernames": "", "expires_minutes": ""}
    form.update(fields)
    return client.post("/admin/announcements", data=form)


def test_an_admin_announces_to_everyone_and_sees_the_figures(app, client, auth):
    auth.login("boss", "boss-password-1")
    response = compose(client, title="Maintenance at noon", body="Ten minutes", level="warning")
    assert response.status_code == 302
    page = client.get("/admin/announcements").get_data(as_text=True)
    assert "Maintenance at noon" in page and 'data-recipients="2"' in page
    assert 'data-live-reached="0"' in page and 'data-dismissed="0"' in page
    [event] = events(app, "broadcast")
    assert event["type"] == "announcement"
    assert event["data"]["title"] == "Maintenance at noon" and event["data"]["level"] == "warning"


def test_audience_resolution_all_role_and_users(app):
    with app.app_context():
        add_user("dave")
        add_user("root", role="admin")
        everyone = announcements.publish(user("boss"), "All")
        admins = announcements.publish(user("boss"), "Admins", audience="role", role="admin")
        chosen, unknown = announcements.parse_usernames("alice, dave, ghost, alice")
        assert [u.username for u in chosen] == ["alice", "dave"] and unknown == ["ghost"]
        picked = announcements.publish(user("boss"), "Picked", audience="users", users=chosen)

        names = lambda a: sorted(db.session.get(User, i).username  # noqa: E731
                                 for i in announcements.audience_user_ids(a))
        assert names(everyone) == ["alice", "boss", "dave", "root"]
        assert names(admins) == ["boss", "root"]
        assert names(picked) == ["alice", "dave"]
        assert (everyone.recipients, admins.recipients, picked.recipients) == (4, 2, 2)

        titles = lambda name: [a.title for a in announcements.active_for(user(name))]  # noqa: E731
        assert titles("alice") == ["Picked", "All"]
        assert titles("root") == ["Admins", "All"]
        assert titles("boss") == ["Admins", "All"]
        alice_id, dave_id = user("alice").id, user("dave").id
    assert [e["data"]["title"] for e in events(app, "role:admin")] == ["Admins"]
    assert [e["data"]["title"] for e in events(app, f"user:{alice_id}")] == ["Picked"]
    assert [e["data"]["title"] for e in events(app, f"user:{dave_id}")] == ["Picked"]
    assert [e["data"]["title"] for e in events(app, "broadcast")] == ["All"]


def test_banners_show_to_the_audience_on_the_next_page_load(app, client, auth):
    with app.app_context():
        announcements.publish(user("boss"), "For users", audience="role", role="user",
                              level="critical")
        announcements.publish(user("boss"), "For admins", audience="role", role="admin")
    auth.login()
    html = client.get("/notifications").get_data(as_text=True)
    banners = html.split('id="announcement-banners"', 1)[1].split("<main", 1)[0]
    assert "For users" in banners and "announcement--critical" in banners
    assert "For admins" not in banners


def test_expired_announcements_are_not_shown(app):
    with app.app_context():
        announcements.publish(user("boss"), "Soon gone", expires_at=utcnow() + timedelta(minutes=5))
        announcements.publish(user("boss"), "Already gone",
                              expires_at=utcnow() - timedelta(minutes=1))
        alice = user("alice")
        assert [a.title for a in announcements.active_for(alice)] == ["Soon gone"]
        later = utcnow() + timedelta(minutes=10)
        assert announcements.active_for(alice, now=later) == []
        [soon] = announcements.active_for(alice)
        assert announcements.is_active(soon) and not announcements.is_active(soon, now=later)


def test_expiry_in_minutes_from_the_compose_form(app, client, auth):
    auth.login("boss", "boss-password-1")
    assert compose(client, title="Brief", expires_minutes="30").status_code == 302
    with app.app_context():
        [a] = db.session.scalars(select(Announcement)).all()
        assert a.expires_at is not None and announcements.is_active(a)
        assert not announcements.is_active(a, now=utcnow() + timedelta(minutes=31))


def test_dismissing_sticks_and_tells_the_users_other_tabs(app, client, auth):
    with app.app_context():
        a = announcements.publish(user("boss"), "Read me")
        alice_id = user("alice").id
    auth.login()
    assert "Read me" in client.get("/").get_data(as_text=True)
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post(f"/announcements/{a.id}/dismiss",
                           headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 200 and response.get_json()["dismissed"] is True
    page = client.get("/").get_data(as_text=True)
    assert "Read me" not in page.split('id="announcement-banners"', 1)[1].split("<main", 1)[0]
    assert events(app, f"user:{alice_id}")[-1] == {**events(app, f"user:{alice_id}")[-1],
                                                   "type": "announcement.dismissed",
                                                   "data": {"id": a.id}}
    # Twice is harmless; the admin's figure counts the user once.
    client.post(f"/announcements/{a.id}/dismiss", headers={"X-CSRFToken": token})
    with app.app_context():
        assert len(db.session.scalars(select(AnnouncementDismissal)).all()) == 1
        [(_, dismissed)] = announcements.history()
        assert dismissed == 1


def test_nobody_dismisses_an_announcement_meant_for_others(app, client, auth):
    with app.app_context():
        a = announcements.publish(user("boss"), "Admins only", audience="role", role="admin")
    auth.login()
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post(f"/announcements/{a.id}/dismiss", data={"csrf_token": token})
    assert response.status_code == 404
    with app.app_context():
        with pytest.raises(NotFound):
            announcements.record_seen(user("alice"), a.id)
        assert db.session.scalars(select(AnnouncementDismissal)).all() == []


def test_live_reach_counts_each_user_once(app):
    with app.app_context():
        a = announcements.publish(user("boss"), "Hi all")
        for name in ("alice", "alice", "boss"):
            announcements.record_seen(user(name), a.id)
        assert db.session.get(Announcement, a.id).live_reached == 2


def test_unknown_usernames_are_named_in_the_form(app, client, auth):
    auth.login("boss", "boss-password-1")
    response = compose(client, audience="users", usernames="alice, ghost, phantom")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Unknown users: ghost, phantom" in html
    with app.app_context():
        assert db.session.scalars(select(Announcement)).all() == []


def test_announcing_to_chosen_users(app, client, auth):
    auth.login("boss", "boss-password-1")
    assert compose(client, audience="users", usernames="alice").status_code == 302
    with app.app_context():
        [a] = db.session.scalars(select(Announcement)).all()
        assert a.audience == "users" and a.recipients == 1
        assert [x.title for x in announcements.active_for(user("boss"))] == []


def test_only_admins_can_announce(app, client, auth):
    auth.login()
    assert client.get("/admin/announcements").status_code == 403
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    response = client.post("/admin/announcements", data={
        "csrf_token": token, "title": "I am admin now", "level": "info", "audience": "all"})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalars(select(Announcement)).all() == []


@pytest.mark.parametrize("page", ["/", "/admin/announcements"])
def test_announcement_text_is_escaped_everywhere(app, client, auth, page):
    with app.app_context():
        announcements.publish(user("boss"), f"Hey {SCRIPT}", body=f"see {IMG}")
    auth.login("boss", "boss-password-1")
    html = client.get(page).get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert SCRIPT not in html and IMG not in html


def test_flask_broadcast_from_the_shell(app, runner):
    result = runner.invoke(args=["broadcast", "Restart at six", "--body", "Save your work",
                                 "--level", "warning", "--users", "alice",
                                 "--expires-minutes", "60"])
    assert result.exit_code == 0, result.output
    assert "sent to 1 account(s)" in result.output
    result = runner.invoke(args=["broadcast", "Admins", "--role", "admin"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        alice_id = user("alice").id
        rows = db.session.scalars(select(Announcement).order_by(Announcement.id)).all()
        assert [(a.audience, a.audience_role, a.level) for a in rows] == [
            ("users", None, "warning"), ("role", "admin", "info")]
        assert rows[0].expires_at is not None
    assert events(app, f"user:{alice_id}")[-1]["data"]["title"] == "Restart at six"
    assert events(app, "role:admin")[-1]["data"]["title"] == "Admins"


@pytest.mark.parametrize(("args", "message"), [
    (["broadcast", "x", "--users", "alice,ghost"], "Unknown users: ghost"),
    (["broadcast", "x", "--role", "admin", "--users", "alice"], "not both"),
    (["broadcast", "x", "--level", "panic"], "Invalid value"),
])
def test_flask_broadcast_explains_mistakes(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code != 0 and message in result.output
