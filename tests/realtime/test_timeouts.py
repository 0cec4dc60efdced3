"""Timeouts everywhere a publisher can wait (issue 17.5).

A hung (not dead) Redis, a publish lock another process keeps, a PostgreSQL transaction that
keeps a stream's row locked: publishers get an answer promptly (their event stored, or a clear
``PublishTimeout``), and followers still get every stored event, from the log if not live.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import time

import psycopg
import pytest
from sqlalchemy import text

from flask_tidings import PublishTimeout
from tests.realtime.local import make_app, postgres_url  # noqa: F401
from tests.realtime.test_resilience import PrivateRedis
from tests.support.live import start_live_server
from tests.support.sockets import Client, publisher

#: Upper bound for anything a publisher may wait; generous, and far below the old behaviour
#: (each publish waited out Redis's 5 s socket timeout while holding the publish lock).
BOUND = 20.0


def finish_within(timeout: float, jobs: list) -> list:
    """Run each callable on its own thread; fail if any is still running after ``timeout``."""
    results: list = [None] * len(jobs)
    errors: list = []

    def run(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except BaseException as exc:  # handed back below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {len(jobs)} publishers still waiting after {timeout}s"
    assert errors == []
    return results


@pytest.fixture
def frozen_redis(tmp_path):
    """A redis-server of this test's own, which the test may SIGSTOP (and always resumes)."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed; `make test` installs it")
    instance = PrivateRedis(tmp_path)
    instance.start()
    yield instance
    if instance.process and instance.process.poll() is None:
        os.kill(instance.process.pid, signal.SIGCONT)
        instance.kill()


def test_a_hung_redis_neither_blocks_publishers_nor_loses_events(tmp_path, frozen_redis,
                                                                live_login_as):
    server = start_live_server(tmp_path / "srv", workers=2,
                               env={"REDIS_URL": frozen_redis.url, "REALTIME_SWEEP_INTERVAL": "1"})
    jobs = publisher(server)
    try:
        client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
        head = client.subscribe("broadcast")["head"]
        before = jobs.broadcast("announcement", {"n": "before"})[0].seq
        assert [m["id"] for m in client.events(1, "broadcast")] == [before]

        os.kill(frozen_redis.process.pid, signal.SIGSTOP)  # alive, accepting, answering nothing

        def publish_five(writer: int):
            return lambda: [jobs.broadcast("announcement", {"w": writer, "n": n})[0].seq
                            for n in range(5)]

        stored = finish_within(BOUND, [publish_five(w) for w in range(8)])
        sent = sorted(seq for seqs in stored for seq in seqs)
        assert sent == list(range(before + 1, before + 41))
        # Not one of them could travel through Redis: the workers' sweeps deliver from the log.
        got = client.events(40, "broadcast", timeout=30)
        assert [m["id"] for m in got] == sent
        assert head < before
        client.close()
    finally:
        os.kill(frozen_redis.process.pid, signal.SIGCONT)
        server.stop()


def test_a_publish_lock_kept_by_another_process_times_out_clearly(tmp_path):
    """Another process keeps the SQLite publish lock (a stuck job). Our publisher gives up after REALTIME_PUBLISH_TIMEOUT with PublishTimeout, having stored
    nothing, and publishes normally once the lock is free."""
    app, realtime, state = make_app(tmp_path, PUBLISH_TIMEOUT=0.5)
    try:
        with app.app_context():
            realtime.publish("user:a", "note", {"n": 0})  # creates the lock file
        lock_path = state.store.engine.url.database + "-publish.lock"
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held as another process would
            [outcome] = finish_within(BOUND, [lambda: _publish_or_error(app, realtime)])
            assert isinstance(outcome, PublishTimeout), outcome
            assert "publish lock" in str(outcome)
            assert state.store.head("user:a") == 1  # nothing stored
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        [event] = finish_within(BOUND, [lambda: _publish_or_error(app, realtime)])
        assert event.seq == 2
    finally:
        state.stop()


def _publish_or_error(app, realtime):
    with app.app_context():
        try:
            return realtime.publish("user:a", "note", {"n": 1})
        except PublishTimeout as exc:
            return exc


def test_a_stream_row_locked_in_postgresql_times_out_clearly(tmp_path, postgres_url):
    """A transaction that appended to a stream and stays open (a hung request) keeps that
    stream's counter row locked. Publishers to the same stream give up after the timeout with
    PublishTimeout; other streams are not held up at all."""
    app, realtime, state = make_app(tmp_path, DATABASE_URL=postgres_url, PUBLISH_TIMEOUT=0.5)
    try:
        with app.app_context():
            realtime.publish("user:a", "note", {"n": 0})
        dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as stuck:
            stuck.execute("UPDATE realtime_streams SET last_seq = last_seq WHERE name = 'user:a'")
            [outcome] = finish_within(BOUND, [lambda: _publish_or_error(app, realtime)])
            assert isinstance(outcome, PublishTimeout), outcome
            assert "stayed locked" in str(outcome)
            with app.app_context():
                assert realtime.publish("user:b", "note", {}).seq == 1
            stuck.rollback()
        with state.store.engine.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "0"  # only ours changed
        [event] = finish_within(BOUND, [lambda: _publish_or_error(app, realtime)])
        assert event.seq == 2
    finally:
        state.stop()
