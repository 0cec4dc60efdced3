"""User stories about accounts: registering, logging in and out, and the form's guard rails."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
import threading
from urllib.parse import quote

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import User
from tests.conftest import AuthActions
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


def test_a_visitor_registers_lands_on_the_dashboard_logged_in_and_logs_out(client, auth, app):
    response = register(client, "carol", "carol-password-1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with app.app_context():
        carol = db.session.scalar(select(User).where(User.username == "carol"))
        assert carol.role == "user"
        assert carol.password_hash.startswith("scrypt:")

    # Registering logged her in: no second trip through the login form.
    page = client.get("/").get_data(as_text=True)
    assert "Hello, carol" in page
    assert 'data-username="carol"' in page
    assert "Welcome, carol. Your account is ready." in page

    response = auth.logout()
    assert response.headers["Location"] == "/auth/login"
    assert "Hello, carol" not in client.get("/").get_data(as_text=True)

    response = auth.login("carol", "carol-password-1", follow_redirects=True)
    assert "Welcome back, carol." in response.get_data(as_text=True)


def test_the_first_login_says_welcome_and_later_ones_welcome_back(client, auth):
    first = auth.login(follow_redirects=True).get_data(as_text=True)
    assert "Welcome, alice." in first and "Welcome back" not in first
    auth.logout()
    assert "Welcome back, alice." in auth.login(follow_redirects=True).get_data(as_text=True)


def test_a_logged_out_visitor_meets_a_landing_page_not_a_login_notice(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Please log in" not in page
    assert "notifications, announcements and chat" in page
    assert 'href="/auth/login"' in page and 'href="/auth/register"' in page


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


def test_a_disabled_account_gets_the_wrong_password_answer_even_for_the_right_password(app, auth):
    wrong = auth.login("alice", "wrong-password")
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "alice")).active = False
        db.session.commit()
    right = auth.login()
    # Nothing tells a guesser that this password was the right one, or that the account exists.
    assert right.status_code == wrong.status_code == 200
    assert b"Invalid username or password." in right.data
    assert b"disabled" not in right.data
    assert "_user_id" not in (right.headers.get("Set-Cookie") or "")


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
    assert b"Hello, alice" in client.get("/").data  # still logged in


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


def test_the_password_hint_sits_under_the_password_field_and_is_tied_to_it(client):
    page = client.get("/auth/register").get_data(as_text=True)
    password_at, hint_at, confirm_at = (page.index('id="password"'), page.index("At least 8"),
                                        page.index('id="confirm"'))
    assert password_at < hint_at < confirm_at
    assert re.search(r'<input[^>]*aria-describedby="password-hint"[^>]*id="password"', page)
    assert 'id="password-hint"' in page


def test_form_errors_are_tied_to_their_fields(client):
    response = register(client, "dave", "short1", "different-1")
    page = response.get_data(as_text=True)
    password = re.search(r'<input[^>]*id="password"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in password
    described = re.search(r'aria-describedby="([^"]+)"', password).group(1).split()
    assert described == ["password-hint", "password-error-1"]
    assert re.search(r'<p class="field__error" id="password-error-1">[^<]*at least 8', page)
    confirm = re.search(r'<input[^>]*id="confirm"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in confirm and 'aria-describedby="confirm-error-1"' in confirm
    # Fields without errors are not marked invalid.
    username = re.search(r'<input[^>]*id="username"[^>]*>', page).group(0)
    assert "aria-invalid" not in username


def test_every_page_has_an_icon_and_favicon_ico_answers(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data
    assert client.get("/static/favicon.svg").status_code == 200


# --------------------------------------------------------------------------- password reset


class SmtpSink:
    """A tiny real SMTP server on a free loopback port that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"220 sink ready\r\n")
                for line in lines:
                    verb = line[:4].upper()
                    if verb == b"EHLO" or verb == b"HELO":
                        conn.sendall(b"250 sink\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 go on\r\n")
                        body = []
                        for data in lines:
                            if data == b".\r\n":
                                break
                            body.append(data)
                        self.messages.append(b"".join(body).decode())
                        conn.sendall(b"250 kept\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    yield sink
    sink.close()


def ask_for_reset(client, login):
    token = csrf_token_from(client.get("/auth/reset").get_data(as_text=True))
    return client.post("/auth/reset", data={"csrf_token": token, "login": login})


def reset_link_in(text: str) -> str:
    return re.search(r"http://localhost(/auth/reset/[\w.-]+)", text).group(1)


def set_email(app, username, email):
    with app.app_context():
        db.session.scalar(select(User).where(User.username == username)).email = email
        db.session.commit()


def choose_password(client, link, password):
    form = client.get(link)
    assert form.status_code == 200, form.headers.get("Location")
    token = csrf_token_from(form.get_data(as_text=True))
    return client.post(link, data={"csrf_token": token, "password": password, "confirm": password})


def test_a_forgotten_password_is_reset_through_a_link_that_works_once(app, client, auth, caplog):
    set_email(app, "alice", "alice@example.org")
    elsewhere = app.test_client()
    AuthActions(elsewhere).login()  # alice is logged in on another device
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        response = ask_for_reset(client, "Alice@Example.org")
    assert response.headers["Location"] == "/auth/login"
    assert "a link to choose a new password is on its way" in client.get(
        "/auth/login").get_data(as_text=True)
    # No MAIL_SERVER in development: the mail is written to the server log instead.
    [record] = [r for r in caplog.records if r.name == "tidings.mail"]
    assert "to=alice@example.org" in record.getMessage()
    link = reset_link_in(record.getMessage())

    response = choose_password(client, link, "a-brand-new-pass")
    assert response.headers["Location"] == "/"
    assert "Your new password is set." in client.get("/").get_data(as_text=True)
    # The old password is gone, the other device is logged out, the link is spent.
    assert b"Hello, alice" not in elsewhere.get("/").data
    auth.logout()
    assert b"Invalid username or password." in auth.login("alice", "alice-password-1").data
    assert auth.login("alice", "a-brand-new-pass").status_code == 302
    auth.logout()
    again = client.get(link)
    assert again.headers["Location"] == "/auth/reset"
    assert "expired or has already been used" in client.get("/auth/reset").get_data(as_text=True)


def test_a_reset_request_reveals_nothing_about_accounts(app, client, caplog):
    set_email(app, "alice", "alice@example.org")
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        answers, pages = [], []
        for name in ("nobody", "boss", "alice"):
            answers.append(ask_for_reset(client, name))
            pages.append(client.get(answers[-1].headers["Location"]).get_data(as_text=True))
    # The same answer for a stranger, an account without email and one with it.
    assert {a.status_code for a in answers} == {302}
    assert all("is on its way" in page for page in pages)
    assert [r.getMessage().count("to=alice@example.org")
            for r in caplog.records if r.name == "tidings.mail"] == [1]


def test_a_reset_link_expires(app, client, caplog):
    set_email(app, "alice", "alice@example.org")
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        ask_for_reset(client, "alice")
    link = reset_link_in(caplog.records[-1].getMessage())
    app.config["PASSWORD_RESET_MAX_AGE"] = -1  # every link is older than that
    assert client.get(link).headers["Location"] == "/auth/reset"
    assert client.get(link[:-3] + "abc").headers["Location"] == "/auth/reset"


def test_with_a_mail_server_the_link_is_mailed_and_not_logged(app, client, smtp_sink, caplog):
    set_email(app, "alice", "alice@example.org")
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_sink.port,
                      MAIL_FROM="Tidings <tidings@example.org>")
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        ask_for_reset(client, "alice")
    [raw] = smtp_sink.messages
    message = email.message_from_string(raw, policy=email.policy.default)
    assert message["To"] == "alice@example.org"
    assert message["From"] == "Tidings <tidings@example.org>"
    assert message["Subject"] == "Reset your Tidings password"
    link = reset_link_in(message.get_content())
    assert not [r for r in caplog.records if link in r.getMessage()]
    assert choose_password(client, link, "a-brand-new-pass").headers["Location"] == "/"


def test_in_production_without_a_mail_server_no_link_reaches_the_log(app, client, caplog):
    set_email(app, "alice", "alice@example.org")
    app.config["TIDINGS_ENV"] = "production"
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        ask_for_reset(client, "alice")
    messages = [r.getMessage() for r in caplog.records if r.name == "tidings.mail"]
    assert messages and all("/auth/reset/" not in m for m in messages)
    assert "MAIL_SERVER is not set" in messages[0]


def test_a_new_password_must_still_be_a_good_one(app, client, caplog):
    set_email(app, "alice", "alice@example.org")
    with caplog.at_level(logging.INFO, logger="tidings.mail"):
        ask_for_reset(client, "alice")
    link = reset_link_in(caplog.records[-1].getMessage())
    response = choose_password(client, link, "alice")
    assert response.status_code == 200
    assert b"at least 8 characters" in response.data


def test_registration_takes_an_optional_email_for_password_resets(app, client):
    token = csrf_token_from(client.get("/auth/register").get_data(as_text=True))
    bad = client.post("/auth/register", data={
        "csrf_token": token, "username": "erin", "email": "not-an-address",
        "password": "erin-password-1", "confirm": "erin-password-1"})
    assert b"does not look like an email address" in bad.data
    good = client.post("/auth/register", data={
        "csrf_token": token, "username": "erin", "email": " erin@example.org ",
        "password": "erin-password-1", "confirm": "erin-password-1"})
    assert good.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(User.email).where(User.username == "erin")) == \
            "erin@example.org"
