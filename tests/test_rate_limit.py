"""User stories about password guessing being slowed down."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from app.extensions import db
from app.models import LoginAttempt, utcnow


def test_an_account_locks_after_five_failures_even_for_the_right_password(auth):
    for _ in range(5):
        assert auth.login("alice", "wrong-password").status_code == 200
    response = auth.login("alice", "alice-password-1")
    assert response.status_code == 429
    assert b"Too many login attempts. Try again in 15 minutes." in response.data
    assert int(response.headers["Retry-After"]) > 14 * 60


def test_other_accounts_are_not_locked_by_someone_elses_failures(app, auth):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 100
    for _ in range(5):
        auth.login("alice", "wrong-password")
    assert auth.login("boss", "boss-password-1").status_code == 302


def test_one_address_guessing_many_accounts_is_locked(app, auth):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 3
    for name in ("x1", "x2", "x3"):
        auth.login(name, "whatever-password")
    response = auth.login("alice", "alice-password-1")
    assert response.status_code == 429
    assert b"Too many login attempts" in response.data


def test_the_lock_lifts_when_the_failures_age_out_of_the_window(app, auth):
    for _ in range(5):
        auth.login("alice", "wrong-password")
    with app.app_context():
        db.session.execute(
            update(LoginAttempt).values(created_at=utcnow() - timedelta(minutes=16))
        )
        db.session.commit()
    assert auth.login("alice", "alice-password-1").status_code == 302


def test_a_successful_login_forgets_the_accounts_failures(app, auth):
    for _ in range(4):
        auth.login("alice", "wrong-password")
    assert auth.login("alice", "alice-password-1").status_code == 302
    with app.app_context():
        keys = db.session.scalars(select(LoginAttempt.key)).all()
    assert "account:alice" not in keys
    assert keys.count("address:127.0.0.1") == 4
