"""End to end on a real gunicorn (two workers, Redis): announcements reach their audience's
sockets and nobody else's, missed notifications arrive once on reconnect, and reading in one
tab updates the others."""

from __future__ import annotations

import os
import re
import time

import pytest
import requests
from sqlalchemy import select

from app import create_app
from app.config import Config
from app.extensions import db
from app.models import User
from app.notifications import service
from app.notifications.models import Notification
from tests.support import services
from tests.support.forms import csrf_token_from
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(
        tmp_path_factory.mktemp("notifications-live"),
        workers=2,
        env={"REDIS_URL": services.REDIS_URL, "REALTIME_SWEEP_INTERVAL": "1",
             "REALTIME_REDIS_CHANNEL": f"tidings-test-notifications-{os.getpid()}"},
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def site(server):
    """The site's own code in this process, bound to the live server's database and Redis
    channel: the way ``flask notify`` or a background job runs beside the web workers."""
    config = Config()
    config.SQLALCHEMY_DATABASE_URI = server.env["DATABASE_URL"]
    config.REDIS_URL = services.REDIS_URL
    config.REALTIME_REDIS_CHANNEL = server.env["REALTIME_REDIS_CHANNEL"]
    config.DEMO_ACCOUNTS = False
    app = create_app(config)
    yield app
    with app.app_context():
        db.engine.dispose()


def user_id(site, username: str) -> int:
    with site.app_context():
        return db.session.scalar(select(User.id).where(User.username == username))


def notify(site, username: str, title: str) -> int:
    with site.app_context():
        return service.create_notification(user_id(site, username), "system", title).id


def command(client: Client, type_: str, data: dict, ref: str) -> tuple[dict, list[dict]]:
    """Send a command; return its reply (or error) and the other messages read meanwhile."""
    client.send({"type": type_, "ref": ref, "data": data})
    others = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = client.recv(max(0.1, deadline - time.monotonic()))
        if message.get("ref") == ref:
            return message, others
        others.append(message)
    raise AssertionError(f"no answer to {type_}")


def compose_token(http: requests.Session, server) -> str:
    page = http.get(server.url + "/admin/announcements", timeout=10)
    assert page.status_code == 200
    return csrf_token_from(page.text)


def test_an_announcement_to_users_reaches_alice_and_bob_but_not_the_admin(server, site):
    admin_http = live_login(server, "admin", "admin-demo-pass")
    alice_http = live_login(server, "alice", "alice-demo-pass")
    alice, alice_other_tab = Client(server, alice_http), Client(server, alice_http)
    bob = Client(server, live_login(server, "bob", "bob-demo-pass"))
    admin = Client(server, admin_http)
    try:
        for client in (alice, bob):
            client.subscribe("role:user")
        alice_other_tab.subscribe(alice_other_tab.own_stream)
        for stream in admin.welcome["streams"]:
            admin.subscribe(stream)
        assert "role:user" not in admin.welcome["streams"]

        token = compose_token(admin_http, server)
        posted = admin_http.post(server.url + "/admin/announcements", timeout=10,
                                 allow_redirects=False, data={
                                     "csrf_token": token, "title": "Coffee in the lobby",
                                     "body": "<b>now</b>", "level": "warning",
                                     "audience": "role", "role": "user"})
        assert posted.status_code == 302

        [for_alice] = alice.events(1, "role:user")
        [for_bob] = bob.events(1, "role:user")
        for received in (for_alice, for_bob):
            assert received["type"] == "announcement"
            assert received["data"]["title"] == "Coffee in the lobby"
            assert received["data"]["body"] == "<b>now</b>"  # data; the page sets it as text
        announcement_id = for_alice["data"]["id"]

        # Both pages acknowledge receipt: that is the admin's "reached live" figure.
        for client in (alice, bob):
            reply, _ = command(client, "announcement.seen", {"id": announcement_id}, "seen")
            assert reply["type"] == "reply", reply

        # A marker the admin does receive: the users' announcement never came before it.
        marker = admin_http.post(server.url + "/admin/announcements", timeout=10,
                                 allow_redirects=False, data={
                                     "csrf_token": token, "title": "Marker for admins",
                                     "level": "info", "audience": "role", "role": "admin"})
        assert marker.status_code == 302
        [first] = admin.events(1)
        assert first["data"]["title"] == "Marker for admins"

        history = admin_http.get(server.url + "/admin/announcements", timeout=10).text
        row = re.search(rf'data-announcement-id="{announcement_id}".*?</tr>', history, re.S)
        assert row and 'data-live-reached="2"' in row.group(0)
        assert 'data-recipients="2"' in row.group(0)

        # Alice dismisses in one tab; her other tab hears it, and the banner stays gone.
        reply, _ = command(alice, "announcement.dismiss", {"id": announcement_id}, "dismiss")
        assert reply["type"] == "reply", reply
        gone = alice_other_tab.events(1, alice_other_tab.own_stream)[0]
        assert gone["type"] == "announcement.dismissed"
        assert gone["data"] == {"id": announcement_id}
        page = alice_http.get(server.url + "/", timeout=10).text
        banners = page.split('id="announcement-banners"', 1)[1].split("<main", 1)[0]
        assert "Coffee in the lobby" not in banners
        # It moved to the dashboard's history of earlier announcements.
        assert "Coffee in the lobby" in page.split('id="dashboard-announcements"', 1)[1]
        assert "Coffee in the lobby" in live_login(server, "bob", "bob-demo-pass").get(
            server.url + "/", timeout=10).text
    finally:
        for client in (alice, alice_other_tab, bob, admin):
            client.close()


def test_a_notification_sent_while_offline_arrives_exactly_once_on_reconnect(server, site):
    http = live_login(server, "bob", "bob-demo-pass")
    tab = Client(server, http)
    stream = tab.own_stream
    tab.subscribe(stream)
    notify(site, "bob", "While you watch")
    [seen] = tab.events(1, stream)
    assert seen["type"] == "notification" and seen["data"]["title"] == "While you watch"
    tab.close()

    # From the shell, as cron would: stored, and logged for whoever reconnects.
    result = site.test_cli_runner().invoke(args=["notify", "bob", "While you were away"])
    assert result.exit_code == 0, result.output

    again = Client(server, http)
    try:
        again.subscribe(stream, after=seen["id"])
        [missed] = again.events(1, stream)
        assert missed["data"]["title"] == "While you were away"
        assert missed["data"]["unread"] == seen["data"]["unread"] + 1
        notify(site, "bob", "And now live")
        [live] = again.events(1, stream)
        assert live["data"]["title"] == "And now live"  # not a second copy of the missed one
        assert live["id"] == missed["id"] + 1
    finally:
        again.close()


def test_reading_in_one_tab_updates_the_other_and_foreign_ids_are_refused(server, site):
    http = live_login(server, "alice", "alice-demo-pass")
    tabs = [Client(server, http), Client(server, http)]
    try:
        stream = tabs[0].own_stream
        for tab in tabs:
            tab.subscribe(stream)
        mine = notify(site, "alice", "Read me in one tab")
        for tab in tabs:
            assert tab.events(1, stream)[0]["data"]["id"] == mine

        bobs = notify(site, "bob", "Not for alice")
        refused, _ = command(tabs[0], "notifications.mark_read", {"ids": [mine, bobs]}, "x")
        assert refused["type"] == "error" and refused["code"] == "not_found"
        bad, _ = command(tabs[0], "notifications.mark_read", {"ids": "all"}, "y")
        assert bad["type"] == "error" and bad["code"] == "bad_message"
        with site.app_context():
            assert db.session.get(Notification, bobs).read_at is None
            assert db.session.get(Notification, mine).read_at is None

        reply, _ = command(tabs[0], "notifications.mark_read", {"ids": [mine]}, "ok")
        assert reply["type"] == "reply" and reply["data"]["ids"] == [mine]
        [read] = tabs[1].events(1, stream)
        assert read["type"] == "notification.read"
        assert read["data"]["ids"] == [mine]
        assert read["data"]["unread"] == reply["data"]["unread"]
    finally:
        for tab in tabs:
            tab.close()


def test_users_cannot_announce_by_page_or_socket(server):
    http = live_login(server, "alice", "alice-demo-pass")
    assert http.get(server.url + "/admin/announcements", timeout=10).status_code == 403
    token = csrf_token_from(http.get(server.url + "/", timeout=10).text)
    posted = http.post(server.url + "/admin/announcements", timeout=10, allow_redirects=False,
                       data={"csrf_token": token, "title": "I am the admin now",
                             "level": "critical", "audience": "all"})
    assert posted.status_code == 403
    tab = Client(server, http)
    try:
        for kind in ("announcement", "announcement.publish", "announcements.create"):
            answer, _ = command(tab, kind, {"title": "x"}, kind)
            assert answer["type"] == "error" and answer["code"] == "unknown_type"
    finally:
        tab.close()
    assert "I am the admin now" not in http.get(server.url + "/", timeout=10).text


def test_repeating_mark_read_and_dismiss_over_sockets_stores_nothing_more(server, site):
    """Issue 14: four sockets sending mark_read at the allowed rate filled the durable log.
    Only a real change is published now; 20-digit ids are refused without a 500."""
    http = live_login(server, "alice", "alice-demo-pass")
    tabs = [Client(server, http) for _ in range(4)]
    try:
        reply, _ = command(tabs[0], "notifications.mark_read", {"all": True}, "clean slate")
        assert reply["type"] == "reply"
        mine = notify(site, "alice", "Read me once")
        stream = tabs[0].own_stream
        with site.app_context():
            store = site.extensions["realtime"].store
            before = store.head(stream)
        for round_ in range(5):
            for n, tab in enumerate(tabs):
                reply, _ = command(tab, "notifications.mark_read", {"ids": [mine]},
                                   f"r{round_}-{n}")
                assert reply["type"] == "reply"
                reply, _ = command(tab, "notifications.mark_read", {"all": True},
                                   f"a{round_}-{n}")
                assert reply["type"] == "reply"
        with site.app_context():
            assert store.head(stream) == before + 1  # the one real change
        for kind, data in (("notifications.mark_read", {"ids": [10**19 + 7]}),
                           ("announcement.dismiss", {"id": 10**19 + 7}),
                           ("announcement.seen", {"id": 10**19 + 7})):
            answer, _ = command(tabs[0], kind, data, kind)
            assert answer["type"] == "error" and answer["code"] == "not_found", answer
    finally:
        for tab in tabs:
            tab.close()
