"""Process roles: a process that only publishes (cron, a CLI command, a job queue, a plain thread)
starts no serving thread, and what it publishes reaches open sockets at once, in the embedded
default too (one host, SQLite, no Redis)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading

import pytest

from app import create_app
from app.config import TestConfig
from flask_tidings import Realtime
from tests.support.live import ROOT, live_login
from tests.support.sockets import Client

#: The log sweep would find a missed event eventually; with it this slow, only a real push can
#: deliver within the test's patience.
NO_SWEEP = {"REALTIME_SWEEP_INTERVAL": "600"}

SERVING_THREADS = ("tidings-reactor", "tidings-command", "tidings-sweep", "tidings-local",
                   "tidings-dispatch", "tidings-redis", "tidings-pglisten", "tidings-dbpoll")


def _serving_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(SERVING_THREADS)]


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": server.env["DATABASE_URL"], "FLASK_APP": "wsgi:app",
           "SECRET_KEY": server.env["SECRET_KEY"], "TIDINGS_ENV": "development"}
    return subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cron_job_notification_reaches_the_open_tab_without_waiting_for_the_sweep(
        live_server, workers):
    server = live_server(workers=workers, env=NO_SWEEP)
    # With two workers, open a socket on each, whichever the kernel hands it to.
    tabs = [Client(server, live_login(server, "alice", "alice-demo-pass")) for _ in range(2 * workers)]
    try:
        for tab in tabs:
            tab.subscribe(tab.own_stream)
        done = _cli(server, "notify", "alice", "Your export is ready")
        assert done.returncode == 0, done.stderr
        for tab in tabs:
            [event] = tab.events(1, tab.own_stream, timeout=20)
            assert event["data"]["title"] == "Your export is ready"
    finally:
        for tab in tabs:
            tab.close()


def test_publishing_from_a_command_starts_no_serving_thread(tmp_path):
    app = create_app(TestConfig(database_uri=f"sqlite:///{tmp_path / 'p.db'}"))
    realtime: Realtime = app.extensions["realtime"].ext
    before = _serving_threads()
    with app.app_context():
        app.extensions["realtime"].store.create_tables()
        event = realtime.notify(7, "notification", {"title": "hi"})
    assert event.seq == 1
    assert _serving_threads() == before


def _publish_from_a_plain_thread_in_a_forked_worker(db: str, result) -> None:
    # The worker builds its own app, as gunicorn's workers do, after the fork.
    app = create_app(TestConfig(database_uri=f"sqlite:///{db}"))
    realtime = app.extensions["realtime"].ext
    outcome = []

    def job():
        try:
            outcome.append(realtime.notify(1, "notification", {"title": "from a thread"}).seq)
        except Exception as exc:  # reported to the parent, which asserts on it
            outcome.append(repr(exc))

    worker = threading.Thread(target=job)
    worker.start()
    worker.join(30)
    result.put(outcome)


def test_a_plain_thread_in_a_forked_worker_publishes_to_its_own_app(tmp_path):
    """gunicorn's arbiter builds an app of its own (start-up chores) before forking: the workers
    must not mistake it for theirs when a plain thread publishes."""
    db = tmp_path / "fork.db"
    arbiter_app = create_app(TestConfig(database_uri=f"sqlite:///{db}"))
    with arbiter_app.app_context():
        arbiter_app.extensions["realtime"].store.create_tables()
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    child = context.Process(target=_publish_from_a_plain_thread_in_a_forked_worker,
                            args=(str(db), result))
    child.start()
    outcome = result.get(timeout=60)
    child.join(30)
    assert outcome == [1]
