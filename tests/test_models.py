"""The models behave the same on SQLite (development) and PostgreSQL (production).

The PostgreSQL run uses the suite's private server (tests/support/services.py) in a schema of its
own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app import create_app
from app.auth import throttle
from app.config import TestConfig
from app.extensions import db
from app.models import LoginThrottle, User, utcnow
from tests.support import services


def postgres_schema_url():
    """Create a throwaway schema; return (url that uses it, function that drops it)."""
    url = services.POSTGRES_URL
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    with engine.begin() as connection:
        schema = f"test_{uuid.uuid4().hex[:12]}"
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", drop


@pytest.fixture(params=["sqlite", "postgresql"])
def model_app(request, tmp_path):
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'models.db'}"
    else:
        url, drop = postgres_schema_url()
    app = create_app(TestConfig(database_uri=url))
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.engine.dispose()
    if drop:
        drop()


def test_a_user_keeps_a_hashed_password_and_a_role(model_app):
    user = User(username="grace")
    user.set_password("grace-password-1")
    db.session.add(user)
    db.session.commit()
    db.session.expire_all()

    stored = db.session.scalar(sa.select(User).where(User.username == "grace"))
    assert stored.role == "user" and not stored.is_admin
    assert stored.active and stored.is_active
    assert stored.created_at is not None
    assert stored.password_hash != "grace-password-1"
    assert stored.check_password("grace-password-1")
    assert not stored.check_password("wrong")


def test_usernames_are_unique(model_app):
    for _ in range(2):
        user = User(username="heidi")
        user.set_password("heidi-password-1")
        db.session.add(user)
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_login_failures_are_counted_in_the_window_only(model_app):
    old = utcnow() - timedelta(minutes=30)
    db.session.add(LoginThrottle(key="account:ivan", failures=50, last_failure_at=old))
    db.session.add(LoginThrottle(key="pair:ivan|10.0.0.1", failures=50, last_failure_at=old))
    db.session.commit()
    with model_app.test_request_context():
        rules = throttle.login_rules("Ivan", "10.0.0.1", known=False)
        for _ in range(5):  # the old failures are forgotten: five fresh ones are allowed
            assert isinstance(throttle.claim(rules), throttle.Claim)
        refusal = throttle.claim(rules)
        assert isinstance(refusal, throttle.Refusal) and refusal.reason == "pair"
        assert refusal.minutes == 15
        assert db.session.get(LoginThrottle, "account:ivan").failures == 5
        # Forgiving a claim clears the account's counters and gives the address one back.
        throttle.forgive(throttle.Claim(tuple(rule.key for rule in rules), None), "ivan")
        assert db.session.get(LoginThrottle, "pair:ivan|10.0.0.1") is None
        assert db.session.get(LoginThrottle, "account:ivan") is None
        assert db.session.get(LoginThrottle, "address:10.0.0.1").failures == 4


def test_expired_counters_are_pruned(model_app):
    old = utcnow() - timedelta(hours=3)
    db.session.add_all(LoginThrottle(key=f"address:10.0.0.{n}", failures=1, last_failure_at=old)
                       for n in range(10))
    db.session.add(LoginThrottle(key="address:10.0.1.1", failures=1, last_failure_at=utcnow()))
    db.session.commit()
    with model_app.test_request_context():
        assert throttle.prune_expired() == 10
    assert db.session.scalars(sa.select(LoginThrottle.key)).all() == ["address:10.0.1.1"]


def test_an_account_may_have_an_email_and_remembers_its_last_login(model_app):
    user = User(username="judy", email="judy@example.org")
    user.set_password("judy-password-1")
    db.session.add(user)
    db.session.commit()
    assert user.last_login_at is None
    user.last_login_at = utcnow()
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(User, user.id).last_login_at is not None
