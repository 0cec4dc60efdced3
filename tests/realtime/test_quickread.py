"""The heads a subscribe reads come from the DBAPI cursor (flask_tidings/quickread.py): the same
answers as SQLAlchemy's, the same exceptions, and a connection that failed is not reused."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import DBAPIError

from flask_tidings.store import EventStore, padded, streams
from tests.realtime.local import postgres_url  # noqa: F401  (fixture)


def store_on(url: str) -> EventStore:
    store = EventStore(lambda: create_engine(url))
    store.create_tables()
    return store


def check_heads_match_the_log(store: EventStore) -> None:
    for n in range(3):
        store.append("broadcast", "note", {"n": n})
    store.append("user:7", "note", {})
    with store.engine.connect() as conn:
        truth = dict(conn.execute(select(streams.c.name, streams.c.last_seq)).all())
    assert truth == {"broadcast": 3, "user:7": 1}
    assert store.head("broadcast") == 3
    assert store.head("user:7") == 1
    assert store.head("user:8") == 0  # no event yet
    assert store.heads(["broadcast", "user:7", "user:8"]) == truth
    names = [f"user:{n}" for n in range(700)] + ["broadcast"]  # two chunks of the IN list
    assert store.heads(names) == truth
    assert len(padded(names[:3])) == 4


def test_heads_match_the_log_on_sqlite(tmp_path):
    check_heads_match_the_log(store_on(f"sqlite:///{tmp_path / 'log.db'}"))


def test_heads_match_the_log_on_postgresql(postgres_url):  # noqa: F811
    store = store_on(postgres_url)
    try:
        check_heads_match_the_log(store)
    finally:
        store.engine.dispose()


def test_a_failed_read_raises_sqlalchemys_error_and_keeps_a_sound_connection(tmp_path):
    store = store_on(f"sqlite:///{tmp_path / 'log.db'}")
    store.append("broadcast", "note", {})
    assert store.head("broadcast") == 1
    dropped = []
    event.listen(store.engine.pool, "invalidate", lambda conn, record, exc: dropped.append(exc))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE realtime_streams RENAME TO away")
    with pytest.raises(DBAPIError, match="realtime_streams") as failed:
        store.heads(["broadcast", "user:1"])
    # Nothing wrong with the connection itself (an in-memory database lives in it): kept.
    assert not failed.value.connection_invalidated and dropped == []
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE away RENAME TO realtime_streams")
    assert store.heads(["broadcast", "user:1"]) == {"broadcast": 1}


def test_a_connection_the_database_dropped_fails_one_read_and_is_replaced(postgres_url):  # noqa: F811
    store = store_on(postgres_url)
    admin = create_engine(postgres_url)
    try:
        store.append("broadcast", "note", {})
        assert store.head("broadcast") == 1  # its connection now waits in the pool
        raw = store.engine.raw_connection()
        cursor = raw.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        cursor.close()
        raw.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(DBAPIError) as failed:
            store.head("broadcast")
        assert failed.value.connection_invalidated
        assert store.head("broadcast") == 1  # a fresh connection, not the dead one again
    finally:
        admin.dispose()
        store.engine.dispose()


def test_a_database_that_cannot_be_reached_raises_sqlalchemys_error_as_a_query_would():
    # The site answers SQLAlchemy's OperationalError with 503 + Retry-After (app/errors.py).
    from sqlalchemy.exc import OperationalError

    store = EventStore(lambda: create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}))
    with pytest.raises(OperationalError):
        store.head("broadcast")
    with pytest.raises(OperationalError):
        store.heads(["broadcast", "user:1"])
