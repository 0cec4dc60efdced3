"""A process that only publishes (a CLI command, a cron job, a test's publisher) starts nothing it
does not need: no listener that would outlive its database, no reactor, no sweep."""

from __future__ import annotations

import threading

from flask import Flask

from flask_tidings import Realtime


def tidings_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tidings-")}


def test_a_job_that_only_publishes_starts_no_listener_reactor_or_sweep(tmp_path):
    app = Flask("job")
    app.config.update(SECRET_KEY="job", REALTIME_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      REALTIME_BROKER="database", REALTIME_WORKERS=2)
    realtime = Realtime(app)
    state = app.extensions["realtime"]
    state.store.create_tables()
    before = tidings_threads()
    with app.app_context():
        event = realtime.publish("broadcast", "announcement", {"n": 1})
        realtime.emit("room:1", "chat.typing", {"who": "job"})
    started = {t.name for t in tidings_threads() - before}
    assert event.seq == 1
    assert state.reactor is None and state.commands is None
    assert started <= {"tidings-dblog-send"}  # only the sender of the ephemeral message
    state.stop()

    # The same app serving a request becomes a worker: listener (poller), sweep, reports.
    with app.test_request_context():
        state.ensure_started()
    started = {t.name for t in tidings_threads() - before}
    assert {"tidings-dbpoll", "tidings-sweep", "tidings-cluster"} <= started
    state.stop()
