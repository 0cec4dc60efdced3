"""Session cookies as a browser receives them: flags in production, a new cookie at login.

tests/test_auth.py already checks HttpOnly and SameSite=Lax on the development login response,
that nothing planted in the session survives login, and remember-me; tests/test_config.py that
ProductionConfig *says* Secure. These check what the real responses carry.
"""

from __future__ import annotations

import pytest
from werkzeug.http import parse_cookie

from app import create_app
from app.config import ProductionConfig
from app.extensions import db
from app.models import User
from tests.support.forms import csrf_token_from

HTTPS = "https://tidings.example"


def set_cookies(response) -> dict[str, str]:
    """``name -> full Set-Cookie header`` of a response."""
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def cookie_value(header: str) -> str:
    name = header.split("=", 1)[0]
    return parse_cookie(header.split(";", 1)[0])[name]


@pytest.fixture
def production_client(tmp_path, monkeypatch):
    """The production app over HTTPS (as behind its TLS proxy), with one account."""
    monkeypatch.setenv("SECRET_KEY", "p" * 64)
    monkeypatch.setenv("TRUSTED_HOSTS", "tidings.example")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'prod.db'}")
    app = create_app(ProductionConfig)
    with app.app_context():
        db.create_all()
        user = User(username="alice", role="user")
        user.set_password("alice-password-1")
        db.session.add(user)
        db.session.commit()
    yield app.test_client()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_production_login_sets_secure_httponly_lax_session_and_remember_cookies(production_client):
    client = production_client
    page = client.get("/auth/login", base_url=HTTPS)
    response = client.post(
        "/auth/login", base_url=HTTPS,
        # Over HTTPS Flask-WTF also checks the Referer is this site, as a browser sends it.
        headers={"Referer": HTTPS + "/auth/login"},
        data={"csrf_token": csrf_token_from(page.get_data(as_text=True)), "username": "alice",
              "password": "alice-password-1", "remember": "y"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    cookies = set_cookies(response)
    for name in ("session", "remember_token"):
        flags = [part.strip() for part in cookies[name].split(";")]
        assert "Secure" in flags, cookies[name]
        assert "HttpOnly" in flags, cookies[name]
        assert "SameSite=Lax" in flags, cookies[name]


def test_login_issues_a_new_session_cookie_and_the_old_one_stays_anonymous(app, client, auth):
    # The visitor's pre-login cookie (it holds the login form's CSRF secret) ...
    page = client.get("/auth/login")
    before = cookie_value(set_cookies(page)["session"])
    response = auth.login()
    after = cookie_value(set_cookies(response)["session"])
    assert after != before
    assert b'data-username="alice"' in client.get("/").data

    # ... is worth nothing to whoever copied it before the login (session fixation): they get
    # the visitors' landing page, not alice's dashboard.
    attacker = app.test_client()
    attacker.set_cookie("session", before)
    response = attacker.get("/")
    assert b"data-username" not in response.data
    assert attacker.get("/notifications").headers["Location"].startswith("/auth/login")
    assert attacker.get("/ws/check").status_code == 401


def test_a_session_cookie_copied_before_logout_is_refused_after_logout(app, client, auth):
    response = auth.login()
    stolen = cookie_value(set_cookies(response)["session"])
    auth.logout()
    attacker = app.test_client()
    attacker.set_cookie("session", stolen)
    assert b"data-username" not in attacker.get("/").data
    assert attacker.get("/notifications").status_code == 302
