"""Transactional publish (issue 17.3, issue 14): a feature's row and its event commit together.

``realtime.notify(..., session=db.session)`` stores the event through the request's own
connection, inside the request's transaction, and pushes it only after the commit. So "stored"
always means "will be delivered, live or on resume", a rollback leaves neither, and a view never
needs a second pooled connection.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from app.extensions import db, realtime
from app.models import User
from app.notifications.models import Notification
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client


@pytest.fixture
def announced(app, monkeypatch):
    """Every message the broker is handed, with whether its event was readable by another
    connection at that moment (it must be: a push announces what the log already holds)."""
    state = app.extensions["realtime"]
    with app.test_request_context():
        broker = state.ensure_publishing()
    handed: list[tuple[dict, bool]] = []
    original = broker.publish

    def publish(message):
        if message.get("k") == "event" and message.get("seq") is not None:
            readable = state.store.payload(message["stream"], message["seq"]) is not None
            handed.append((message, readable))
        original(message)

    monkeypatch.setattr(broker, "publish", publish)
    return handed


def alice(app) -> User:
    return db.session.scalar(select(User).where(User.username == "alice"))


def notes() -> int:
    return db.session.scalar(select(func.count()).select_from(Notification))


def test_a_notification_killed_before_its_commit_leaves_neither_row_nor_event(app, announced):
    store = app.extensions["realtime"].store
    with app.app_context():
        user = alice(app)
        stream = f"user:{user.id}"
        with pytest.raises(RuntimeError):
            db.session.add(Notification(user_id=user.id, kind="system", title="never"))
            db.session.flush()
            realtime.notify(user, "notification", {"title": "never"}, session=db.session)
            raise RuntimeError("the worker died here")
        db.session.rollback()
        assert notes() == 0
        assert store.head(stream) == 0 and store.read_since(stream, 0, 10) == []
        assert announced == []

        note = Notification(user_id=user.id, kind="system", title="kept")
        db.session.add(note)
        db.session.flush()
        event = realtime.notify(user, "notification", {"id": note.id}, session=db.session)
        assert event.seq == 1  # the rolled-back attempt used no number
        assert announced == []  # nothing leaves before the commit ...
        assert store.payload(stream, 1) is None  # ... and nobody else can read it yet
        db.session.commit()
        assert notes() == 1
        [(message, readable)] = announced
        assert message["seq"] == 1 and readable  # pushed after the commit, never before
        assert store.read_since(stream, 0, 10) == [(1, event.payload)]


def test_a_rolled_back_savepoint_takes_only_its_own_events(app, announced):
    with app.app_context():
        user = alice(app)
        stream = f"user:{user.id}"
        try:
            with db.session.begin_nested():
                realtime.notify(user, "notification", {"n": "inner"}, session=db.session)
                raise ValueError("this part fails")
        except ValueError:
            pass
        kept = realtime.notify(user, "notification", {"n": "outer"}, session=db.session)
        db.session.commit()
        assert kept.seq == 1
        assert [m["seq"] for m, _ in announced] == [1]
        store = app.extensions["realtime"].store
        assert [seq for seq, _ in store.read_since(stream, 0, 10)] == [1]


def test_a_session_closed_without_commit_announces_nothing(app, announced):
    with app.app_context():
        user = alice(app)
        session = db.session()
        realtime.broadcast("announcement", {"n": 1}, audience={"users": [user]},
                           session=session)
        session.close()  # the request ended without a commit
        session.execute(select(1))
        session.commit()  # a later transaction of the same session must not push it
    assert announced == []


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request, tmp_path):
    if request.param == "sqlite":
        yield {}
        return
    import psycopg

    from tests.support.services import POSTGRES_ADMIN_DSN as ADMIN_DSN

    name = f"tidings_tx_{tmp_path.name[-20:].replace('-', '_').lower()}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"!!! SKIPPING POSTGRESQL POOL TEST !!! PostgreSQL unreachable ({exc})")
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield {"DATABASE_URL": f"{url}/{name}"}
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_four_times_threads_publishing_requests_all_complete_on_a_small_pool(
        tmp_path, database_env):
    """Issue 14: 4 × threads requests that each store a notification and publish it, on a pool
    of two connections. Each request holds one connection, so they queue and all complete;
    every stored notification reaches the user's open socket."""
    threads = 4
    server = start_live_server(tmp_path / "srv", workers=1, threads=threads,
                               env={**database_env, "REALTIME_SWEEP_INTERVAL": "1"},
                               app="tests.realtime.publishing_site:app")
    try:
        http = live_login(server, "alice", "alice-demo-pass")
        client = Client(server, http)
        user_id = client.welcome["user"]
        head = client.subscribe(client.own_stream)["head"]
        start = threading.Barrier(4 * threads)

        def post(_: int) -> requests.Response:
            start.wait(timeout=30)
            return requests.post(f"{server.url}/_test/notify/{user_id}", timeout=60)

        with ThreadPoolExecutor(4 * threads) as pool:
            answers = list(pool.map(post, range(4 * threads)))
        assert [a.status_code for a in answers] == [200] * (4 * threads), answers[0].text[:300]
        stored = sorted(a.json()["id"] for a in answers)
        events = client.events(4 * threads, client.own_stream, timeout=30)
        assert [e["id"] for e in events] == list(range(head + 1, head + 4 * threads + 1))
        assert sorted(e["data"]["id"] for e in events) == stored
        client.close()
    finally:
        server.stop()
