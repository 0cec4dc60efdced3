"""Reading stream heads prepares a handful of statements, however many streams a worker follows.

A database connection keeps every statement it prepared, by SQL text (pysqlite: 128 per
connection), and an ``IN`` list of n names is a new text for every n. The sweep reads the heads
of every followed stream each second, so each pooled connection used to collect one statement
per follower count it met: memory that grew for as long as clients came and went.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, insert

from flask_tidings.store import IN_CHUNK, EventStore, padded, streams

#: Every SQL text the database connections were asked to run (what they prepare and keep).
executed: set[str] = set()


class RecordingCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):
        executed.add(sql)
        return super().execute(sql, parameters)


class RecordingConnection(sqlite3.Connection):
    """The driver's own connection, so reads that bypass SQLAlchemy's events are seen too."""

    def cursor(self, factory=RecordingCursor):
        return super().cursor(factory)


@pytest.fixture
def store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}",
                           connect_args={"factory": RecordingConnection})
    store = EventStore(lambda: engine)
    store.create_tables()
    with engine.begin() as conn:
        conn.execute(insert(streams), [{"name": f"user:{i}", "last_seq": i} for i in range(1, 601)])
    return store


def statements_of(store: EventStore, action) -> set[str]:
    executed.clear()
    action()
    return set(executed)


def test_heads_of_any_number_of_streams_use_at_most_ten_statement_shapes(store):
    names = [f"user:{i}" for i in range(1, 601)]
    answers = {}

    def read_every_count() -> None:
        for n in range(1, len(names) + 1):
            answers[n] = store.heads(names[:n])

    shapes = statements_of(store, read_every_count)
    assert len(shapes) <= 10  # 1, 2, 4 ... 512 names
    assert all(answers[n] == {f"user:{i}": i for i in range(1, n + 1)} for n in answers)


def test_heads_leave_out_streams_without_events_and_ignore_repeats(store):
    assert store.heads(["user:3", "room:9", "user:3", "user:5"]) == {"user:3": 3, "user:5": 5}
    assert store.heads([]) == {}


@pytest.mark.parametrize(("count", "length"), [(1, 1), (2, 2), (3, 4), (5, 8), (100, 128),
                                                (IN_CHUNK, IN_CHUNK)])
def test_lists_are_padded_with_their_last_value_to_a_power_of_two(count, length):
    values = [str(i) for i in range(count)]
    out = padded(values)
    assert len(out) == length
    assert out[:count] == values and set(out[count:]) <= {values[-1]}
