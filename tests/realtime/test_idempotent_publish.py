"""Idempotent retries (issue 17): a publish retried with the same key publishes once.

A client that lost the answer to a request cannot tell "failed" from "done, answer lost", so it
retries. With ``key=`` the second publish on a stream finds the first event: nothing is stored,
nothing is pushed, no sequence number is spent, and the caller gets the first event back.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Column, Float, MetaData, String, Table, Text, create_engine, inspect

from app.extensions import db, realtime
from flask_tidings.store import EventStore
from tests.realtime.test_postgres import postgres_database  # noqa: F401  (a fixture)
from tests.realtime.test_transactional import alice, announced  # noqa: F401  (fixtures)


def test_a_job_retried_after_a_lost_answer_publishes_its_announcement_once(app, announced):
    with app.app_context():
        first = realtime.publish("broadcast", "announcement", {"title": "Maintenance"},
                                 key="job-41")
        again = realtime.publish("broadcast", "announcement", {"title": "Maintenance"},
                                 key="job-41")
        other = realtime.publish("broadcast", "announcement", {"title": "Other"}, key="job-42")
        assert not first.replayed and again.replayed
        assert (again.seq, again.id, again.payload) == (first.seq, first.id, first.payload)
        assert again.data == {"title": "Maintenance"}
        assert other.seq == first.seq + 1  # the retry spent no sequence number
        assert [m["seq"] for m, _ in announced] == [first.seq, other.seq]  # pushed once each
        assert realtime.published("broadcast", "job-41").seq == first.seq
        assert realtime.published("broadcast", "never-used") is None


def test_a_key_is_per_stream_so_one_form_token_reaches_every_chosen_user(app, announced):
    with app.app_context():
        sent = realtime.broadcast("announcement", {"n": 1}, audience={"users": [1, 2]},
                                  key="form-7")
        retried = realtime.broadcast("announcement", {"n": 1}, audience={"users": [1, 2]},
                                     key="form-7")
        assert [e.stream for e in sent] == ["user:1", "user:2"]
        assert not any(e.replayed for e in sent) and all(e.replayed for e in retried)
        assert [e.seq for e in retried] == [e.seq for e in sent]
        assert len(announced) == 2


def test_a_retry_inside_a_transaction_finds_the_committed_event_and_pushes_nothing(
    app, announced
):
    with app.app_context():
        user = alice(app)
        first = realtime.notify(user, "notification", {"n": 1}, session=db.session, key="k1")
        db.session.commit()
        again = realtime.notify(user, "notification", {"n": 1}, session=db.session, key="k1")
        assert again.replayed and again.seq == first.seq
        db.session.commit()
        assert [m["seq"] for m, _ in announced] == [first.seq]
        nxt = realtime.notify(user, "notification", {"n": 2}, session=db.session)
        db.session.commit()
        assert nxt.seq == first.seq + 1


def test_a_rolled_back_publish_forgets_its_key(app, announced):
    with app.app_context():
        user = alice(app)
        realtime.notify(user, "notification", {"n": 1}, session=db.session, key="k1")
        db.session.rollback()  # the request failed before its commit: nothing was saved
        kept = realtime.notify(user, "notification", {"n": 1}, session=db.session, key="k1")
        db.session.commit()
        assert not kept.replayed and kept.seq == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, 7, "é"])
def test_a_key_that_is_not_a_short_printable_token_is_refused_before_anything_is_stored(
    app, key
):
    with app.app_context():
        with pytest.raises(ValueError, match="idempotency key"):
            realtime.publish("broadcast", "announcement", {}, key=key)
        assert realtime.head("broadcast") == 0


def _racing_publishers(store: EventStore, count: int = 6) -> list:
    results: list = []
    start = threading.Barrier(count)

    def publish(n: int) -> None:
        start.wait()
        with store.writing(10.0):
            results.append(store.append("broadcast", "announcement", {"n": n}, key="double"))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'log.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    store = EventStore(lambda: engine)
    store.create_tables()
    yield store
    engine.dispose()


def test_a_double_submit_racing_itself_stores_one_event_and_leaves_no_gap(fresh_store):
    results = _racing_publishers(fresh_store)
    assert len({(e.seq, e.id) for e in results}) == 1
    assert sum(not e.replayed for e in results) == 1
    assert fresh_store.head("broadcast") == 1  # no counter bump was left behind
    fresh_store.append("broadcast", "announcement", {"n": "next"})
    assert [seq for seq, _ in fresh_store.read_since("broadcast", 0, 10)] == [1, 2]


def test_a_racing_retry_inside_callers_transactions_keeps_their_other_rows(fresh_store):
    """PostgreSQL: the second transaction's insert collides on the key; a savepoint takes back
    only the event, so the caller's transaction can go on (and roll back or commit)."""
    engine = fresh_store.engine
    results: list = []
    start = threading.Barrier(2)

    def publish() -> None:
        with engine.begin() as conn:
            start.wait()
            if engine.dialect.name == "sqlite":
                with fresh_store.writing(10.0):
                    results.append(fresh_store.append("broadcast", "a", {}, conn, key="k"))
                    conn.commit()
                return
            results.append(fresh_store.append("broadcast", "a", {}, conn, key="k"))
            conn.exec_driver_sql("SELECT 1")  # the transaction is still usable

    threads = [threading.Thread(target=publish) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.replayed for e in results) == [False, True]
    assert fresh_store.head("broadcast") == 1


def test_an_adopter_without_alembic_gets_the_key_column_from_create_tables(tmp_path):
    """A log made by an earlier version has no key column: create_tables adds it."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old = MetaData()
    Table("realtime_events", old, Column("id", String, primary_key=True),
          Column("stream", String(200)), Column("seq", Float), Column("type", String(64)),
          Column("payload", Text), Column("created_at", Float))
    old.create_all(engine)
    store = EventStore(lambda: engine)
    store.create_tables()
    store.create_tables()  # and again: nothing left to do
    columns = {c["name"] for c in inspect(engine).get_columns("realtime_events")}
    assert "idempotency_key" in columns
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("realtime_events")}
    assert indexes["uq_realtime_events_stream_key"]["unique"]
