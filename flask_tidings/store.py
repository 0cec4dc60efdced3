"""The durable event log: every published event is a row before it is a push.

Each stream (``user:7``, ``broadcast``, ``room:3`` ...) numbers its events 1, 2, 3 ... with a
counter row that is bumped in the same transaction as the insert. The counter's row lock makes
commits of one stream happen in sequence order, so a gap a connection sees in the live pushes is
always already readable here: that is what makes resume and catch-up exact.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    select,
    text,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

streams = Table(
    "realtime_streams",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

events = Table(
    "realtime_events",
    metadata,
    # BigInteger for PostgreSQL, but SQLite only autoincrements an INTEGER primary key.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("stream", String(200), nullable=False),
    # NULL for ephemeral events (typing, presence) that only the "database" broker carries.
    Column("seq", BigInteger, nullable=True),
    Column("type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("stream", "seq", name="uq_realtime_events_stream_seq"),
    Index("ix_realtime_events_created_at", "created_at"),
)

_NEXT_SEQ = text(
    "INSERT INTO realtime_streams (name, last_seq) VALUES (:name, 1) "
    "ON CONFLICT (name) DO UPDATE SET last_seq = realtime_streams.last_seq + 1 "
    "RETURNING last_seq"
)


@dataclass(frozen=True)
class Event:
    """One stored event: ``payload`` is the exact JSON text every client receives."""

    stream: str
    seq: int | None
    type: str
    payload: str
    id: int | None = None


def envelope(stream: str, seq: int | None, type_: str, data: object) -> str:
    """Serialize the wire envelope once; every recipient gets these same bytes."""
    body = {"type": type_, "stream": stream, "data": data, "ts": round(time.time(), 6)}
    if seq is not None:
        body["id"] = seq
    return json.dumps(body, separators=(",", ":"))


class NoWriterLock(nullcontext):
    """PostgreSQL: concurrent writers are fine (it locks per stream row)."""

    def __enter__(self) -> NoWriterLock:
        return self

    def release_file(self) -> None:
        pass


class SqliteWriter:
    """A thread lock, plus an ``flock`` on a file beside the database for the other workers.

    A blocked ``flock`` wakes the moment the lock is released (SQLite's busy handler polls).
    The file is opened once per process: locks taken through a descriptor inherited across
    ``fork`` would be shared with the parent instead of excluding it. The publisher gives the
    file lock back (``release_file``) as soon as its transaction is committed, so a slow broker
    (a Redis that hangs until its timeout) holds up only this worker's publishers, which must
    push in order, and never the other workers'.
    """

    def __init__(self, database: str):
        self._thread_lock = threading.Lock()
        in_memory = not database or database == ":memory:" or database.startswith("file::memory")
        self._path = None if in_memory else f"{database}-publish.lock"
        self._fd: int | None = None
        self._pid = 0
        self._file_held = False

    def _descriptor(self) -> int | None:
        if self._path is None:
            return None
        if self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> SqliteWriter:
        self._thread_lock.acquire()
        try:
            fd = self._descriptor()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._file_held = True
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def release_file(self) -> None:
        """Let the other workers write; this process's publishers still wait for the thread lock."""
        if self._file_held:
            self._file_held = False
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __exit__(self, *exc: object) -> None:
        try:
            self.release_file()
        finally:
            self._thread_lock.release()


class EventStore:
    """Appends and reads events; the engine is resolved lazily (it may need an app context)."""

    def __init__(self, engine_factory: Callable[[], Engine]):
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._writer: SqliteWriter | NoWriterLock | None = None
        self._writer_created = threading.Lock()

    def writing(self) -> SqliteWriter | NoWriterLock:
        """Held by a publisher around "append, then push": one writer at a time on SQLite.

        SQLite takes one writer at a time anyway; writers that collide wait in its busy handler,
        which sleeps 1, 2, 5 ... 100 ms between tries (measured with four concurrent publishers:
        ~1,500 events/s fell to ~150 in one worker and ~100 across two). Queueing on a lock
        instead costs nothing, and the pushes leave in sequence order, so followers never see a
        gap that only needs time. PostgreSQL locks per stream row and takes concurrent writers
        as they come. Use as ``with store.writing() as lock: append ...; lock.release_file();
        push ...``.
        """
        if self._writer is None:  # decided once, on the first publish
            with self._writer_created:
                if self._writer is None:
                    if self.engine.dialect.name == "sqlite":
                        self._writer = SqliteWriter(self.engine.url.database or "")
                    else:
                        self._writer = NoWriterLock()
        return self._writer

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def create_tables(self) -> None:
        metadata.create_all(self.engine, checkfirst=True)

    def append(self, stream: str, type_: str, data: object) -> Event:
        with self.engine.begin() as conn:
            seq = conn.execute(_NEXT_SEQ, {"name": stream}).scalar_one()
            payload = envelope(stream, seq, type_, data)
            row_id = conn.execute(
                events.insert().values(
                    stream=stream, seq=seq, type=type_, payload=payload, created_at=time.time()
                )
            ).inserted_primary_key[0]
        return Event(stream, seq, type_, payload, row_id)

    def append_raw(self, stream: str, payload: str) -> None:
        """Store an unsequenced row (ephemeral event or control message) for log-tailing brokers."""
        with self.engine.begin() as conn:
            conn.execute(
                events.insert().values(
                    stream=stream,
                    seq=None,
                    type="ephemeral",
                    payload=payload,
                    created_at=time.time(),
                )
            )

    def head(self, stream: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(streams.c.last_seq).where(streams.c.name == stream)
            ).scalar()
        return int(value or 0)

    def heads(self, names: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                rows = conn.execute(
                    select(streams.c.name, streams.c.last_seq).where(streams.c.name.in_(chunk))
                )
                found.update({name: int(seq) for name, seq in rows})
        return found

    def read_since(self, stream: str, after: int, limit: int) -> list[tuple[int, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events.c.seq, events.c.payload)
                .where(events.c.stream == stream, events.c.seq > after)
                .order_by(events.c.seq)
                .limit(limit)
            )
            return [(int(seq), payload) for seq, payload in rows]

    def payload(self, stream: str, seq: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(events.c.payload).where(events.c.stream == stream, events.c.seq == seq)
            ).scalar()

    def tail(self, after_id: int, limit: int = 1000) -> list[Event]:
        """Rows by insertion id, for the "database" broker that fans out from the log itself."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(events.c.id, events.c.stream, events.c.seq, events.c.type, events.c.payload)
                .where(events.c.id > after_id)
                .order_by(events.c.id)
                .limit(limit)
            )
            return [Event(s, q, t, p, i) for i, s, q, t, p in rows]

    def last_id(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(events.c.id).order_by(events.c.id.desc()).limit(1)).scalar()
                or 0
            )

    def prune_ephemeral(self, older_than: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(events).where(events.c.seq.is_(None), events.c.created_at < older_than)
            )
