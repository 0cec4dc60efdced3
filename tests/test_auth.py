"""User stories about accounts: registering, logging in and out, and the form's guard rails."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import User
from tests.support.forms import csrf_token_from


def register(client, username, password, confirm=None):
    token = csrf_token_from(client.get("/auth/register").get_data(as_text=True))
    return client.post(
        "/auth/register",
        data={
            "csrf_token": token,
            "username": username,
            "password": password,
            "confirm": password if confirm is None else confirm,
        },
    )


def test_a_visitor_registers_logs_in_sees_the_dashboard_and_logs_out(client, auth, app):
    response = register(client, "carol", "carol-password-1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"
    with app.app_context():
        carol = db.session.scalar(select(User).where(User.username == "carol"))
        assert carol.role == "user"
        assert carol.password_hash.startswith("scrypt:")

    response = auth.login("carol", "carol-password-1")
    assert response.headers["Location"] == "/"

    page = client.get("/").get_data(as_text=True)
    assert "Hello, carol" in page
    assert 'data-username="carol"' in page

    response = auth.logout()
    assert response.headers["Location"] == "/auth/login"
    assert client.get("/").status_code == 302


def test_an_anonymous_visitor_is_sent_to_login_and_back(client, auth):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=")

    response = auth.login("boss", "boss-password-1", next="/admin/")
    assert response.headers["Location"] == "/admin/"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong-password"), ("nobody", "alice-password-1")],
    ids=["wrong password", "unknown user"],
)
def test_a_failed_login_does_not_reveal_whether_the_account_exists(auth, username, password):
    response = auth.login(username, password)
    assert response.status_code == 200
    assert b"Invalid username or password." in response.data


def test_a_disabled_account_cannot_log_in(app, auth):
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "alice")).active = False
        db.session.commit()
    response = auth.login()
    assert response.status_code == 403
    assert b"disabled" in response.data


def test_a_taken_username_is_refused(client):
    response = register(client, "alice", "another-password-1")
    assert response.status_code == 200
    assert b"That username is already taken." in response.data


@pytest.mark.parametrize(
    ("username", "password", "confirm", "message"),
    [
        ("dave", "short1", None, b"at least 8 characters"),
        ("dave", "1234567890", None, b"not be only digits"),
        ("davedave", "DaveDave", None, b"not be the same as the username"),
        ("dave", "dave-password-1", "different-1", b"Passwords must match."),
        ("d a v e", "dave-password-1", None, b"letters, digits"),
        ("", "dave-password-1", None, b"This field is required."),
    ],
)
def test_registration_explains_what_is_wrong(client, username, password, confirm, message):
    response = register(client, username, password, confirm)
    assert response.status_code == 200
    assert message in response.data


def test_a_form_posted_without_its_csrf_token_is_rejected(client):
    response = client.post(
        "/auth/login", data={"username": "alice", "password": "alice-password-1"}
    )
    assert response.status_code == 400
    assert b"CSRF" in response.data


def test_a_csrf_token_from_another_session_is_rejected(app, client):
    stranger = app.test_client()
    token = csrf_token_from(stranger.get("/auth/login").get_data(as_text=True))
    client.get("/auth/login")
    response = client.post(
        "/auth/login",
        data={"csrf_token": token, "username": "alice", "password": "alice-password-1"},
    )
    assert response.status_code == 400


def test_logout_requires_a_post_with_the_csrf_token(client, auth):
    auth.login()
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/").status_code == 200  # still logged in


@pytest.mark.parametrize(
    "hostile",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "dashboard",
    ],
)
def test_a_hostile_next_parameter_is_ignored(client, auth, hostile):
    response = auth.login(next=quote(hostile, safe=""))
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_a_local_next_parameter_is_followed(auth):
    response = auth.login(next="/admin/%3Ftab%3D1")
    assert response.headers["Location"] == "/admin/?tab=1"


def test_logging_in_starts_a_fresh_session(app, client, auth):
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    auth.login()
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"]


def test_session_and_remember_cookies_are_httponly_and_samesite(client, auth):
    response = auth.login(remember=True)
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("session="))
    remember_cookie = next(c for c in cookies if c.startswith("remember_token="))
    for cookie in (session_cookie, remember_cookie):
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie


def test_remember_me_keeps_the_user_logged_in_after_the_session_cookie_is_gone(client, auth):
    auth.login(remember=True)
    client.delete_cookie("session")
    response = client.get("/")
    assert response.status_code == 200
    assert b"Hello, alice" in response.data
