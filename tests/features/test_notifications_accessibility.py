"""What assistive technology reads on the pages of notifications, announcements and admin, as
rendered by the server (the browser tests run axe-core on the same pages)."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.extensions import db
from app.models import User
from app.notifications import service
from tests.support.forms import csrf_token_from


def alice(app) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == "alice"))


def test_the_bells_label_says_how_many_are_unread_on_load(app, client, auth):
    auth.login()
    assert 'aria-label="Notifications"' in client.get("/").get_data(as_text=True)
    with app.app_context():
        for n in range(3):
            service.create_notification(alice(app), "system", f"Note {n}")
    assert 'aria-label="Notifications, 3 unread"' in client.get("/").get_data(as_text=True)


def test_every_page_starts_with_a_skip_link_to_main_and_has_polite_live_regions(client, auth):
    for logged_in in (False, True):
        if logged_in:
            auth.login()
        html = client.get("/" if logged_in else "/auth/login").get_data(as_text=True)
        body = html.split("<body", 1)[1]
        first_link = re.search(r"<a [^>]*>", body).group(0)
        assert 'href="#main"' in first_link and "skip-link" in first_link
        assert '<main class="page" id="main"' in html
    # Logged in: one region for new notifications, one for the connection (never assertive).
    assert 'id="notification-announcer" class="visually-hidden" aria-live="polite"' in html
    assert 'id="connection-announcer" class="visually-hidden" aria-live="polite"' in html
    assert 'id="connection-notice"' in html
    # Toasts are visual only: the announcer says it once.
    assert 'id="toasts" class="toasts"></div>' in html


def test_compose_errors_are_tied_to_their_fields(client, auth):
    auth.login("boss", "boss-password-1")
    token = csrf_token_from(client.get("/admin/announcements").get_data(as_text=True))
    html = client.post("/admin/announcements", data={
        "csrf_token": token, "title": "", "level": "info", "audience": "users",
        "role": "user", "usernames": "ghost", "expires_minutes": "0"}).get_data(as_text=True)
    title = re.search(r"<input[^>]*id=\"title\"[^>]*>", html).group(0)
    assert 'aria-invalid="true"' in title and 'aria-describedby="title-error"' in title
    assert 'id="title-error"' in html
    minutes = re.search(r"<input[^>]*id=\"expires_minutes\"[^>]*>", html).group(0)
    assert 'aria-describedby="expires_minutes-error"' in minutes


def test_unknown_usernames_are_an_error_of_the_usernames_field(client, auth):
    auth.login("boss", "boss-password-1")
    token = csrf_token_from(client.get("/admin/announcements").get_data(as_text=True))
    html = client.post("/admin/announcements", data={
        "csrf_token": token, "title": "Hi", "level": "info", "audience": "users",
        "role": "user", "usernames": "ghost"}).get_data(as_text=True)
    field = re.search(r"<input[^>]*id=\"usernames\"[^>]*>", html).group(0)
    assert 'aria-describedby="usernames-error"' in field
    assert '<p class="field__error" id="usernames-error">Unknown users: ghost</p>' in html


def test_role_and_usernames_belong_to_their_audience(client, auth):
    auth.login("boss", "boss-password-1")
    html = client.get("/admin/announcements").get_data(as_text=True)
    assert re.search(r'data-show-for="role">\s*<label for="role"', html)
    assert re.search(r'data-show-for="users">\s*<label for="usernames"', html)
    assert "/static/js/admin.js" in html


def test_deactivating_asks_first(client, auth):
    auth.login("boss", "boss-password-1")
    html = client.get("/admin/users").get_data(as_text=True)
    row = html[html.index("<td>alice</td>"):].split("</tr>", 1)[0]
    # The visible button only opens the question; the one that acts names the account.
    assert '<details class="confirm-inline">' in row
    assert re.search(r"<summary[^>]*>Deactivate<span", row)
    assert "Deactivate alice</button>" in row
    assert row.index("<summary") < row.index("<form")
