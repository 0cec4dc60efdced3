"""The public API as a team adding flask_tidings to its own site meets it: mistakes fail at once,
with a message that says what to do, instead of a 500 at the first handshake or a stored stream
named after the wrong thing."""

from __future__ import annotations

import sqlite3
import sys

import pytest
from flask import Flask

from flask_tidings import Identity, Realtime
from flask_tidings.extension import as_identity, user_stream


@pytest.fixture
def site(tmp_path):
    """A bare Flask site with its own login and no Flask-SQLAlchemy."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", REALTIME_DATABASE_URL=f"sqlite:///{tmp_path / 'rt.db'}")
    realtime = Realtime(identity=lambda: None)
    realtime.init_app(app)
    with app.app_context():
        realtime.state().store.create_tables()
    return app, realtime


def test_notify_takes_a_user_or_an_id(site):
    app, realtime = site

    class User:
        id = 7

    with app.app_context():
        assert realtime.notify(User(), "notification", {"title": "a"}).stream == "user:7"
        assert realtime.notify(7, "notification").stream == "user:7"
        assert realtime.notify("alice@example.org", "notification").stream == (
            "user:alice@example.org")


@pytest.mark.parametrize("user, error", [
    (None, TypeError),                                     # an anonymous user's id
    (True, TypeError),
    ({"id": 7, "password_hash": "scrypt:..."}, TypeError),  # a dict would leak into the stream
    (3.5, TypeError),
    ("", ValueError),
    ("a b", ValueError),
    ("x" * 101, ValueError),
])
def test_notify_refuses_what_is_not_a_user(site, user, error):
    app, realtime = site
    with app.app_context(), pytest.raises(error):
        realtime.notify(user, "notification", {"title": "a"})


def test_a_sqlite_row_is_refused_with_a_hint(site):
    app, realtime = site
    row = sqlite3.connect(":memory:").execute("select 1 as id").fetchone()
    with app.app_context(), pytest.raises(TypeError, match=r"pass its id"):
        realtime.notify(row, "notification")


@pytest.mark.parametrize("stream, type_, data, error", [
    ("user 7", "notification", None, ValueError),
    ("", "notification", None, ValueError),
    (7, "notification", None, ValueError),
    ("broadcast", "", None, ValueError),
    ("broadcast", "a" * 65, None, ValueError),
    ("broadcast", "notification", {"when": object()}, TypeError),
])
def test_publish_validates_its_arguments(site, stream, type_, data, error):
    app, realtime = site
    with app.app_context(), pytest.raises(error):
        realtime.publish(stream, type_, data)


def test_nothing_is_stored_for_a_refused_publish(site):
    app, realtime = site
    with app.app_context():
        with pytest.raises(TypeError):
            realtime.publish("broadcast", "notification", {"when": object()})
        assert realtime.head("broadcast") == 0


def test_without_flask_login_an_identity_loader_is_required_at_init(monkeypatch):
    monkeypatch.setitem(sys.modules, "flask_login", None)  # as if it were not installed
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="identity_loader"):
        Realtime().init_app(app)
    app.config["REALTIME_DATABASE_URL"] = "sqlite://"
    Realtime(identity=lambda: None).init_app(app)  # with a loader, all is well


def test_without_a_database_init_app_says_what_to_set():
    with pytest.raises(RuntimeError, match="REALTIME_DATABASE_URL"):
        Realtime(Flask(__name__), identity=lambda: None)


def test_identity_loaders_may_return_the_site_own_user_object():
    class Row:
        id = 12
        username = "carol"
        role = "admin"

    assert as_identity(Row()) == Identity("12", "carol", frozenset({"admin"}))
    assert as_identity(None) is None
    assert user_stream(Row()) == "user:12"
