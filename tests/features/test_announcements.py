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


# ---- after publishing: edit, end, retract (issue 16, item 5) ----------------------------------


def banner_area(html: str) -> str:
    return html.split('id="announcement-banners"', 1)[1].split("<main", 1)[0]


def test_an_admin_edits_ends_and_retracts_and_the_audience_hears_each_change(app):
    with app.app_context():
        boss = user("boss")
        a = announcements.publish(boss, "Maintenance at noon", "Ten minutes", level="info",
                                  audience="role", role="user")
        announcements.edit(a.id, "Maintenance at one", "Twenty minutes", "warning")
        b = announcements.publish(boss, "Retract me", audience="role", role="user")
        announcements.end(a.id)
        announcements.end(a.id)  # twice: nothing more happens
        announcements.retract(b.id)
        announcements.retract(b.id)
        alice = user("alice")
        assert announcements.active_for(alice) == []
        # Ended stays in alice's history; retracted is gone from it as if never sent.
        assert [x.title for x in announcements.history_for(alice)] == ["Maintenance at one"]
        assert [x.status() for x in db.session.scalars(
            select(Announcement).order_by(Announcement.id))] == ["ended", "retracted"]
    sent = [(e["type"], e["data"].get("title"), e["data"].get("id"))
            for e in events(app, "role:user")]
    assert sent == [
        ("announcement", "Maintenance at noon", a.id),
        ("announcement.updated", "Maintenance at one", a.id),
        ("announcement", "Retract me", b.id),
        ("announcement.ended", None, a.id),
        ("announcement.retracted", None, b.id),
    ]
    updated = events(app, "role:user")[1]["data"]
    assert (updated["body"], updated["level"]) == ("Twenty minutes", "warning")


def test_changes_to_an_announcement_for_chosen_users_reach_only_them(app):
    with app.app_context():
        dave = add_user("dave")
        a = announcements.publish(user("boss"), "Just you", audience="users", users=[dave])
        announcements.end(a.id)
        dave_id, alice_id = dave.id, user("alice").id
    assert [e["type"] for e in events(app, f"user:{dave_id}")] == [
        "announcement", "announcement.ended"]
    assert events(app, f"user:{alice_id}") == []


def test_the_admin_pages_end_edit_and_retract(app, client, auth):
    with app.app_context():
        a = announcements.publish(user("boss"), "Old words", level="info")
    auth.login("boss", "boss-password-1")
    edit_page = client.get(f"/admin/announcements/{a.id}/edit").get_data(as_text=True)
    assert 'value="Old words"' in edit_page
    token = csrf_token_from(edit_page)
    response = client.post(f"/admin/announcements/{a.id}/edit", data={
        "csrf_token": token, "title": "New words", "body": "Better", "level": "warning"})
    assert response.status_code == 302
    assert "New words" in banner_area(client.get("/").get_data(as_text=True))

    assert client.post(f"/admin/announcements/{a.id}/end",
                       data={"csrf_token": token}).status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert "New words" not in banner_area(home)
    earlier = home.split('id="dashboard-announcements"', 1)[1].split("</ul>", 1)[0]
    assert "New words" in earlier
    history = client.get("/admin/announcements").get_data(as_text=True)
    assert f'data-announcement-id="{a.id}" data-status="ended"' in history

    assert client.post(f"/admin/announcements/{a.id}/retract",
                       data={"csrf_token": token}).status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert "New words" not in home.split('id="dashboard-announcements"', 1)[1]
    # A retracted announcement cannot be edited back to life.
    assert client.get(f"/admin/announcements/{a.id}/edit").status_code == 302


@pytest.mark.parametrize("action", ["end", "retract", "edit"])
def test_changing_an_unknown_announcement_is_a_404(client, auth, action):
    auth.login("boss", "boss-password-1")
    token = csrf_token_from(client.get("/admin/announcements").get_data(as_text=True))
    for number in (999, 10**19 + 7):
        response = client.post(f"/admin/announcements/{number}/{action}",
                               data={"csrf_token": token, "title": "x", "level": "info"})
        assert response.status_code == 404


def test_users_cannot_end_or_retract(app, client, auth):
    with app.app_context():
        a = announcements.publish(user("boss"), "Stays")
    auth.login()
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    for action in ("end", "retract"):
        assert client.post(f"/admin/announcements/{a.id}/{action}",
                           data={"csrf_token": token}).status_code == 403
    with app.app_context():
        assert announcements.is_active(db.session.get(Announcement, a.id))


def test_preview_shows_the_banner_and_its_reach_and_sends_nothing(app, client, auth):
    auth.login("boss", "boss-password-1")
    response = compose(client, title="Coffee in the lobby", body="At three", preview="Preview")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    preview = html.split('id="compose-preview"', 1)[1].split("</section>", 1)[0]
    assert "Coffee in the lobby" in preview and "announcement--info" in preview
    assert 'data-preview-recipients>2<' in preview
    # The form keeps what was typed, ready to publish.
    assert 'value="Coffee in the lobby"' in html
    with app.app_context():
        assert db.session.scalars(select(Announcement)).all() == []
    assert events(app, "broadcast") == []


def test_a_critical_announcement_to_everyone_needs_a_confirmation(app, client, auth):
    auth.login("boss", "boss-password-1")
    first = compose(client, title="Evacuate the building", level="critical", audience="all")
    html = first.get_data(as_text=True)
    assert first.status_code == 200
    assert "Publish critical announcement to everyone" in html
    assert 'id="submit"' not in html  # the plain Publish button is replaced by the confirmation
    with app.app_context():
        assert db.session.scalars(select(Announcement)).all() == []

    confirmed = compose(client, title="Evacuate the building", level="critical", audience="all",
                        confirmed="critical-all")
    assert confirmed.status_code == 302
    with app.app_context():
        [a] = db.session.scalars(select(Announcement)).all()
        assert a.level == "critical"
    # Critical to one role, or a warning to everyone, goes out without the extra step.
    assert compose(client, title="Admins: disk full", level="critical", audience="role",
                   role="admin").status_code == 302
    assert compose(client, title="Slow today", level="warning").status_code == 302


def test_reached_live_and_dismissed_figures_are_pushed_to_admins(app):
    """The admin's history page updates its figures from these (ephemeral: nothing stored)."""
    state = app.extensions["realtime"]
    with app.app_context():
        a = announcements.publish(user("boss"), "Counted")
        state.ensure_started()
        pushed: list[dict] = []
        state.broker.publish = lambda message: pushed.append(message)
        announcements.record_seen(user("alice"), a.id)
        announcements.record_seen(user("alice"), a.id)  # another tab: counted once, no push
        announcements.dismiss(user("alice"), a.id)
    figures = [json.loads(m["payload"]) for m in pushed if m.get("stream") == "role:admin"]
    assert [(f["type"], f["data"]["live_reached"], f["data"]["dismissed"]) for f in figures] == [
        ("announcement.figures", 1, 0), ("announcement.figures", 1, 1)]
    assert all(m["seq"] is None for m in pushed if m.get("stream") == "role:admin")
    assert [e["type"] for e in events(app, "role:admin")] == []


def test_banners_show_two_then_more_critical_first(app, client, auth):
    with app.app_context():
        for n in range(4):
            announcements.publish(user("boss"), f"Notice {n}")
        announcements.publish(user("boss"), "Critical one", level="critical", audience="role",
                              role="user")
        announcements.publish(user("boss"), "Newest info")
    auth.login()
    area = banner_area(client.get("/").get_data(as_text=True))
    shown, rest = area.split('class="announcements__more"', 1)
    assert shown.count('class="announcement__title"') == 2
    assert shown.index("Critical one") < shown.index("Newest info")
    assert rest.count('class="announcement__title"') == 4
    assert '<span class="js-more-count">4</span> more' in rest


def test_the_dashboard_lists_history_not_the_live_banners(app, client, auth):
    with app.app_context():
        announcements.publish(user("boss"), "Happening now")
        old = announcements.publish(user("boss"), "Old news")
        announcements.dismiss(user("alice"), old.id)
    auth.login()
    home = client.get("/").get_data(as_text=True)
    card = home.split('id="dashboard-announcements"', 1)[1].split("</ul>", 1)[0]
    assert "Old news" in card and "Happening now" not in card
    assert "Happening now" in banner_area(home)


def test_the_history_figures_are_there_for_the_admin_page_to_resync(app, client, auth):
    with app.app_context():
        a = announcements.publish(user("boss"), "Counted")
        announcements.record_seen(user("alice"), a.id)
        announcements.dismiss(user("alice"), a.id)
    auth.login("boss", "boss-password-1")
    [figures] = client.get("/admin/announcements/figures").get_json()["announcements"]
    assert figures == {"id": a.id, "recipients": 2, "live_reached": 1, "dismissed": 1,
                       "status": "live"}
    auth.logout()
    auth.login()
    assert client.get("/admin/announcements/figures").status_code == 403
