"""Many publishers at once on SQLite: they queue on one lock, every event gets its number, once.

SQLite takes one writer at a time. Publishers (threads of a worker, or several workers) take
``EventStore.writing()`` around "append, then push", so they wait on a lock instead of in
SQLite's busy handler, and the pushes leave in sequence order. PostgreSQL needs no such lock.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
import traceback
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from app.extensions import realtime
from flask_tidings.store import EventStore, SqliteWriter

STREAM = "room:1"

#: Upper bound for anything a test waits on, so a lock that is never released fails the test
#: instead of hanging the suite. Not a speed goal: those live in bench/.
BOUND = 20.0


def lock_file(app) -> Path:
    """The file beside the site's SQLite database that publishers of every worker lock."""
    return Path(app.extensions["realtime"].store.engine.url.database + "-publish.lock")


def another_worker_could_lock(path: Path) -> bool:
    """Try the lock the way another worker would, without waiting.

    ``flock`` locks belong to an open file, not to a process, so a descriptor of our own
    competes with the store's even inside this process.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def bounded(fn, timeout: float = BOUND):
    """Run ``fn`` on a thread and return its result; a call still blocked after ``timeout``
    fails the test (a lock left held) rather than hanging it."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout}s: the writer lock was kept"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def pushes(app):
    """Every event message this app's broker hands out, in the order it hands them out.

    Observed through the extension's own listener hook, which the broker's delivery thread
    calls in delivery order, exactly as it feeds the sockets.
    """
    state = app.extensions["realtime"]
    seen: list[dict] = []

    def listen(from_state, message) -> None:
        if from_state is state and message.get("k") == "event":
            seen.append(message)

    state.ext.listener(listen)
    # A worker that serves sockets: publishing alone starts no delivery thread.
    with app.app_context():
        state.ensure_started()
    yield seen
    state.ext._listeners.remove(listen)  # the extension object outlives this test's app


def test_eight_threads_publishing_at_once_get_every_number_once_and_push_in_order(app, pushes):
    """A busy worker: every thread publishes to one room at the same moment. No "database is
    locked", no number skipped or repeated, and followers receive the events in order, so a
    gap they see is never one that only needed time."""
    threads, each = 8, 50
    total = threads * each
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def publisher(index: int) -> None:
        try:
            with app.app_context():
                start.wait(timeout=BOUND)
                for n in range(each):
                    realtime.publish(STREAM, "chat.message", {"thread": index, "n": n})
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=publisher, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(BOUND)
    assert not [w for w in workers if w.is_alive()], "a publisher is still blocked"
    assert errors == []

    store = app.extensions["realtime"].store
    stored = store.read_since(STREAM, 0, total + 10)
    assert [seq for seq, _ in stored] == list(range(1, total + 1))
    assert store.head(STREAM) == total

    deadline = time.monotonic() + BOUND
    while len(pushes) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m["seq"] for m in pushes] == list(range(1, total + 1))
    # The bytes pushed are the bytes stored: a replay from the log looks exactly like the push.
    assert [m["payload"] for m in pushes] == [payload for _, payload in stored]


def test_while_one_publisher_writes_other_workers_find_the_lock_taken(app):
    """The lock is a real file lock beside the database, so it excludes other processes too,
    and it is free again as soon as the write is done."""
    store = app.extensions["realtime"].store
    with store.writing():
        assert lock_file(app).exists()
        assert not another_worker_could_lock(lock_file(app))
    assert another_worker_could_lock(lock_file(app))


def test_a_publish_that_fails_releases_the_lock_and_uses_no_number(app):
    """Data that is not JSON fails the publish inside the writer; the next publisher (in this
    thread or any other worker) must not wait forever, and no number is lost to the failure."""
    with app.app_context():
        with pytest.raises(TypeError):
            realtime.publish(STREAM, "chat.message", {"when": object()})

    def publish_again():
        with app.app_context():
            return realtime.publish(STREAM, "chat.message", {"text": "still here"})

    assert bounded(publish_again).seq == 1
    assert another_worker_could_lock(lock_file(app))


def publish_from_a_worker(database_uri, stream, count, start, results) -> None:
    """One "gunicorn worker": its own process, its own app, the same SQLite file."""
    try:
        from app import create_app
        from app.config import TestConfig

        app = create_app(TestConfig(database_uri=database_uri))
        start.wait(timeout=BOUND)
        with app.app_context():
            seqs = [
                realtime.publish(stream, "chat.message", {"pid": os.getpid(), "n": n}).seq
                for n in range(count)
            ]
        results.put((os.getpid(), seqs, None))
    except BaseException:
        start.abort()  # the others stop waiting for this worker
        results.put((os.getpid(), None, traceback.format_exc()))


def test_two_worker_processes_publishing_at_once_share_one_numbering(app):
    """Two workers of one site publish to the same room at the same moment: they take turns
    through the lock file beside the database, every number is used exactly once, and neither
    hits a locked database. While a third process (here, the test) holds the lock, neither
    worker stores anything."""
    processes, each = 2, 100
    total = processes * each
    store = app.extensions["realtime"].store
    database_uri = app.config["SQLALCHEMY_DATABASE_URI"]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, as a worker would be
    start = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=publish_from_a_worker,
                    args=(database_uri, STREAM, each, start, results), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        with store.writing():
            try:
                start.wait(timeout=BOUND * 2)  # both workers are built and about to publish
            except threading.BrokenBarrierError:
                pytest.fail(f"a worker failed to start:\n{results.get(timeout=BOUND)[2]}")
            # With the lock working they cannot store anything, however long we look; half a
            # second is plenty to catch a worker that does not take the same lock.
            time.sleep(0.5)
            assert store.head(STREAM) == 0, "a worker published while another held the lock"
        reports = [results.get(timeout=BOUND * 2) for _ in workers]
    finally:
        for worker in workers:
            worker.join(BOUND)
            if worker.is_alive():
                worker.kill()
    assert [error for _, _, error in reports if error] == []
    assert [worker.exitcode for worker in workers] == [0] * processes

    handed_out = sorted(seq for _, seqs, _ in reports for seq in seqs)
    assert handed_out == list(range(1, total + 1))
    for _, seqs, _ in reports:
        assert seqs == sorted(seqs)  # each worker's own events keep their order
    assert [seq for seq, _ in store.read_since(STREAM, 0, total + 10)] == list(
        range(1, total + 1)
    )
    assert lock_file(app).exists()


def hold_the_writer(writer: SqliteWriter, holding, release) -> None:
    with writer:
        holding.set()
        release.wait(BOUND)


def test_a_forked_worker_locks_through_a_descriptor_of_its_own(tmp_path):
    """A worker forked after the parent already published must not reuse the parent's open
    lock file: ``flock`` on a shared open file does not exclude the other side at all."""
    writer = SqliteWriter(str(tmp_path / "site.db"))
    with writer:
        pass  # the parent has written before forking, as a preloaded app would have
    ctx = multiprocessing.get_context("fork")
    holding, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=hold_the_writer, args=(writer, holding, release), daemon=True)
    child.start()
    try:
        assert holding.wait(BOUND), "the forked worker never got the lock"
        parent_wrote = threading.Event()

        def parent_writes() -> None:
            with writer:
                parent_wrote.set()

        threading.Thread(target=parent_writes, daemon=True).start()
        # With the lock working the parent cannot get in, however long we look; half a second
        # is plenty to catch it getting in through a shared descriptor.
        assert not parent_wrote.wait(0.5), "the parent wrote while the forked worker held it"
        release.set()
        assert parent_wrote.wait(BOUND), "the parent never got the lock back"
    finally:
        release.set()
        child.join(BOUND)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"]
)
def test_an_in_memory_database_takes_only_the_thread_lock(url, tmp_path, monkeypatch):
    """One process owns an in-memory database, so a thread lock is all it needs: no lock file
    appears (not even one named after ":memory:" in the working directory)."""
    monkeypatch.chdir(tmp_path)
    store = EventStore(lambda: create_engine(url))
    writer = store.writing()
    assert writer is store.writing()  # one lock for every publisher of this store

    other_thread_entered = threading.Event()

    def other_publisher() -> None:
        with store.writing():
            other_thread_entered.set()

    with writer:
        threading.Thread(target=other_publisher, daemon=True).start()
        assert not other_thread_entered.wait(0.3), "two publishers were inside at once"
    assert other_thread_entered.wait(BOUND)
    assert list(tmp_path.iterdir()) == []


def test_postgresql_publishers_do_not_queue_on_a_lock():
    """PostgreSQL locks per stream row and takes concurrent writers as they come: ``writing()``
    holds nothing, so a second writer gets in while the first is inside. (The engine is never
    connected: the dialect alone decides.)"""
    store = EventStore(lambda: create_engine("postgresql+psycopg://tidings@127.0.0.1/unused"))

    def two_at_once() -> bool:
        with store.writing(), store.writing():
            return True

    assert bounded(two_at_once, timeout=5)
