"""Fixtures: an app on a throwaway SQLite file, its clients, an auth helper, and a real server."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import TestConfig
from app.extensions import db
from app.models import User
from tests.support import services
from tests.support.forms import csrf_token_from
from tests.support.live import LiveServer, live_login, start_live_server


def pytest_sessionfinish(session, exitstatus):
    """Stop the private PostgreSQL and Redis (tests/support/services.py), pass or fail."""
    services.stop_all()


#: Accounts every ``app`` starts with: (username, password, role).
USERS = (
    ("alice", "alice-password-1", "user"),
    ("boss", "boss-password-1", "admin"),
)


@pytest.fixture
def app(tmp_path):
    app = create_app(TestConfig(database_uri=f"sqlite:///{tmp_path / 'test.db'}"))
    with app.app_context():
        db.create_all()
        app.extensions["realtime"].store.create_tables()
        for username, password, role in USERS:
            user = User(username=username, role=role)
            user.set_password(password)
            db.session.add(user)
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class AuthActions:
    """Log in and out through the real forms, CSRF token included."""

    def __init__(self, client):
        self._client = client

    def login(self, username="alice", password="alice-password-1", next=None, remember=False,
              follow_redirects=False):
        url = "/auth/login" + (f"?next={next}" if next is not None else "")
        token = csrf_token_from(self._client.get(url).get_data(as_text=True))
        data = {"csrf_token": token, "username": username, "password": password}
        if remember:
            data["remember"] = "y"
        return self._client.post(url, data=data, follow_redirects=follow_redirects)

    def logout(self, follow_redirects=False):
        # The logout form sits in the header of every logged-in page.
        token = csrf_token_from(self._client.get("/").get_data(as_text=True))
        return self._client.post(
            "/auth/logout", data={"csrf_token": token}, follow_redirects=follow_redirects
        )

    def csrf_token(self, url="/auth/login"):
        return csrf_token_from(self._client.get(url).get_data(as_text=True))


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def live_server(tmp_path_factory):
    """Factory: ``live_server(workers=1, threads=None, env=None) -> LiveServer``.

    Each call starts a real gunicorn on its own port and fresh database; all are stopped at
    teardown. See ``tests/support/live.py``.
    """
    started: list[LiveServer] = []

    def start(workers: int = 1, threads: int | None = None, env: dict | None = None) -> LiveServer:
        server = start_live_server(
            tmp_path_factory.mktemp("live"), workers=workers, threads=threads, env=env
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_login_as():
    """``live_login_as(server, username, password) -> requests.Session`` logged in over HTTP."""
    return live_login
