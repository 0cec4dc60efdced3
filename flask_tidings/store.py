"""The durable event log: every published event is a row before it is a push.

Each stream (``user:7``, ``broadcast``, ``room:3`` ...) numbers its events 1, 2, 3 ... with a
counter row that is bumped in the same transaction as the insert. The counter's row lock makes
commits of one stream happen in sequence order, so a gap a connection sees in the live pushes is
always already readable here: that is what makes resume and catch-up exact.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

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
    bindparam,
    delete,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from .quickread import QuickRead

metadata = MetaData()

#: Longest idempotency key a publisher may give (an ``Idempotency-Key`` header is a UUID or so).
KEY_LENGTH = 128

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
    # The publisher's idempotency key: a retried publish with the same key on the same stream
    # finds this row instead of storing a second one. NULL (most events) never collides.
    Column("idempotency_key", String(KEY_LENGTH), nullable=True),
    UniqueConstraint("stream", "seq", name="uq_realtime_events_stream_seq"),
    Index("ix_realtime_events_created_at", "created_at"),
    Index("uq_realtime_events_stream_key", "stream", "idempotency_key", unique=True),
)

_NEXT_SEQ = text(
    "INSERT INTO realtime_streams (name, last_seq) VALUES (:name, 1) "
    "ON CONFLICT (name) DO UPDATE SET last_seq = realtime_streams.last_seq + 1 "
    "RETURNING last_seq"
)


class PublishTimeout(TimeoutError):
    """A publisher waited longer than ``REALTIME_PUBLISH_TIMEOUT`` for the log.

    Raised instead of waiting forever on a lock another publisher (or a stuck transaction)
    holds: the caller gets a clear error it can answer with 503, and nothing was stored.
    """


@dataclass(frozen=True)
class Event:
    """One stored event: ``payload`` is the exact JSON text every client receives."""

    stream: str
    seq: int | None
    type: str
    payload: str
    id: int | None = None
    #: True when a publish with an idempotency key found this event already stored (a retry):
    #: nothing new was stored or pushed, and this is the first publish's event.
    replayed: bool = False

    @property
    def data(self) -> Any:
        """The ``data`` the publisher gave, read back from the stored envelope."""
        return json.loads(self.payload)["data"]


def envelope(stream: str, seq: int | None, type_: str, data: object) -> str:
    """Serialize the wire envelope once; every recipient gets these same bytes."""
    return _assemble(stream, seq, type_, _dumps(data))


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _assemble(stream: str, seq: int | None, type_: str, data_json: str) -> str:
    # The same text json.dumps gives for {"type", "stream", "data", "ts"[, "id"]}, built from
    # data serialized beforehand: a publisher learns that its data is not JSON before it takes
    # a sequence number, which in a caller's transaction could not be given back.
    head = f'{{"type":{_dumps(type_)},"stream":{_dumps(stream)},"data":{data_json},'
    tail = f'"ts":{_dumps(round(time.time(), 6))}'
    if seq is not None:
        tail += f',"id":{int(seq)}'
    return head + tail + "}"


class NoWriterLock(nullcontext):
    """PostgreSQL: concurrent writers are fine (it locks per stream row, with a lock_timeout)."""

    def __call__(self, timeout: float | None) -> NoWriterLock:
        return self

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

    def __call__(self, timeout: float | None) -> _Holding:
        """``with writer(5.0) as lock:`` waits at most 5 s for the locks (``None``: for ever)."""
        return _Holding(self, timeout)

    def __enter__(self) -> SqliteWriter:
        self.acquire(None)
        return self

    def acquire(self, timeout: float | None) -> None:
        """Take the thread lock, then the file lock; :class:`PublishTimeout` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise PublishTimeout(
                f"another publisher of this process held the publish lock for {timeout:g}s"
            )
        try:
            fd = self._descriptor()
            if fd is not None:
                self._lock_file(fd, deadline, timeout)
                self._file_held = True
        except BaseException:
            self._thread_lock.release()
            raise

    def _lock_file(self, fd: int, deadline: float | None, timeout: float | None) -> None:
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        # flock cannot time out, so poll: briefly at first (a handover between two publishers
        # takes well under a millisecond), then at most every 5 ms.
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PublishTimeout(
                        f"another process held the publish lock {self._path} for {timeout:g}s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.005)

    def release_file(self) -> None:
        """Let the other workers write; this process's publishers still wait for the thread lock."""
        if self._file_held:
            self._file_held = False
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        try:
            self.release_file()
        finally:
            self._thread_lock.release()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Holding:
    """One publisher's turn with a :class:`SqliteWriter`, with its own timeout."""

    __slots__ = ("_writer", "_timeout")

    def __init__(self, writer: SqliteWriter, timeout: float | None):
        self._writer = writer
        self._timeout = timeout

    def __enter__(self) -> _Holding:
        self._writer.acquire(self._timeout)
        return self

    def release_file(self) -> None:
        self._writer.release_file()

    def __exit__(self, *exc: object) -> None:
        self._writer.release()


class _Publish:
    """One publisher's event waiting for a group commit, and what became of it."""

    __slots__ = ("stream", "type_", "data", "key", "announce", "push", "event", "error", "done")

    def __init__(self, stream: str, type_: str, data: object, key: str | None,
                 announce: Callable[[Connection, Event], None] | None,
                 push: Callable[[Event], None] | None):
        self.stream, self.type_, self.data, self.key = stream, type_, data, key
        self.announce, self.push = announce, push
        self.event: Event | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


#: Names per ``IN (...)`` query of :meth:`EventStore.heads` (a power of two).
IN_CHUNK = 512


def padded(values: list[str]) -> list[str]:
    """``values`` with its last one repeated up to the next power of two (1, 2, 4 ... 512).

    An ``IN`` list of n values is a different SQL text for every n, and a database connection
    keeps the statements it prepared, by text: pysqlite up to 128 per connection (~14 kB each
    for 64 names), psycopg up to 100 on the server. The sweep asks for the heads of every
    followed stream each second, and that count moves whenever a client comes or goes: each
    pooled connection slowly filled its cache with one statement per count seen, the slope a
    soak's RSS curve showed. Padded, a connection prepares at most ten shapes of this query.
    A repeated value in ``IN`` changes nothing in the result.
    """
    if not values:
        return values
    size = 1
    while size < len(values):
        size *= 2
    return values + [values[-1]] * (size - len(values))


#: The head reads, compiled once per database kind (and ``IN`` length) and run on the DBAPI
#: connection (quickread.py): every subscribe makes one, a reconnect storm thousands a second.
_HEAD = QuickRead(lambda _: select(streams.c.last_seq).where(streams.c.name == bindparam("name")))
_HEADS = QuickRead(
    lambda size: select(streams.c.name, streams.c.last_seq).where(
        streams.c.name.in_([bindparam(f"name_{i}") for i in range(size)])
    )
)


class EventStore:
    """Appends and reads events; the engine is resolved lazily (it may need an app context)."""

    def __init__(self, engine_factory: Callable[[], Engine]):
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._writer: SqliteWriter | NoWriterLock | None = None
        #: Seconds a PostgreSQL append waits for a stream's row lock (``lock_timeout``).
        self.lock_timeout = 5.0
        self._writer_created = threading.Lock()
        #: Publishers waiting for the publish lock whose events the next holder writes too.
        self._group: list[_Publish] = []
        self._group_lock = threading.Lock()
        #: Transactions committed by :meth:`publish`, and the events they stored.
        self.group_commits = 0
        self.group_events = 0

    def writing(self, timeout: float | None = None) -> _Holding | NoWriterLock:
        """Held by a publisher around "append, then push": one writer at a time on SQLite.

        SQLite takes one writer at a time anyway; writers that collide wait in its busy handler,
        which sleeps 1, 2, 5 ... 100 ms between tries (measured with four concurrent publishers:
        ~1,500 events/s fell to ~150 in one worker and ~100 across two). Queueing on a lock
        instead costs nothing, and the pushes leave in sequence order, so followers never see a
        gap that only needs time. PostgreSQL locks per stream row and takes concurrent writers
        as they come. Use as ``with store.writing(timeout) as lock: append ...;
        lock.release_file(); push ...``; past ``timeout`` seconds :class:`PublishTimeout`.
        """
        if self._writer is None:  # decided once, on the first publish
            with self._writer_created:
                if self._writer is None:
                    if self.engine.dialect.name == "sqlite":
                        self._writer = SqliteWriter(self.engine.url.database or "")
                    else:
                        self._writer = NoWriterLock()
        return self._writer if timeout is None else self._writer(timeout)

    def publish(
        self,
        stream: str,
        type_: str,
        data: object,
        *,
        key: str | None = None,
        announce: Callable[[Connection, Event], None] | None = None,
        push: Callable[[Event], None] | None = None,
        timeout: float | None = None,
    ) -> Event:
        """Store one event in a transaction of its own, then ``push`` it, in sequence order.

        On SQLite, publishers that arrive while another holds the publish lock share a
        transaction (group commit): each queues its event, and whoever takes the lock next
        appends everything queued, in arrival order, commits once and pushes each stored event
        in order. Most of an append's cost is its transaction (pool checkout, BEGIN, COMMIT:
        measured ~800 µs CPU per event alone, ~460 in groups of 4), and concurrent publishers
        waited for the lock anyway. If the shared transaction fails, each event is appended
        again alone, so one publisher's error (bad key, full disk) stays its own. PostgreSQL
        takes concurrent writers as they come (grouping would lock several streams' rows in
        one transaction, in any order: a deadlock waiting to happen), so it appends alone.

        :param push: called with each newly stored event (not with a ``replayed`` one) after
            the commit, under the publish lock, so pushes leave in sequence order.
        :raises PublishTimeout: the publish lock stayed taken past ``timeout``; then this
            event was not stored (it is taken back from the queue, or it was written by a
            holder that had already taken it, and the event is returned after all).
        """
        if self.engine.dialect.name != "sqlite":
            with self.writing(timeout) as lock:
                event = self.append(stream, type_, data, announce=announce, key=key)
                lock.release_file()
                if push is not None and not event.replayed:
                    push(event)
            return event
        mine = _Publish(stream, type_, data, key, announce, push)
        with self._group_lock:
            self._group.append(mine)
        try:
            lock = self.writing(timeout)
            lock.__enter__()
        except PublishTimeout:
            with self._group_lock:
                if mine in self._group:  # nobody took it: nothing was stored
                    self._group.remove(mine)
                    raise
            mine.done.wait()  # a holder took it and is writing it: the outcome is theirs
        else:
            try:
                if not mine.done.is_set():
                    with self._group_lock:
                        batch, self._group = self._group, []
                    self._write_group(batch, lock)
            finally:
                lock.__exit__(None, None, None)
        if mine.error is not None:
            raise mine.error
        assert mine.event is not None
        return mine.event

    def _write_group(self, batch: list[_Publish], lock: Any) -> None:
        """Append ``batch`` in one transaction (each alone if that fails), then push in order."""
        try:
            try:
                with self.engine.begin() as conn:
                    for item in batch:
                        item.event = self._append_unless_stored(
                            conn, item.stream, item.type_, item.data, item.announce, item.key,
                            local=True)
                self.group_commits += 1
                self.group_events += len(batch)
            except Exception:
                for item in batch:
                    item.event = None
                    try:
                        item.event = self.append(item.stream, item.type_, item.data,
                                                 announce=item.announce, key=item.key)
                    except Exception as exc:
                        item.error = exc
            lock.release_file()  # committed: other workers may write while this one pushes
            for item in batch:
                if item.event is not None and not item.event.replayed and item.push is not None:
                    try:
                        item.push(item.event)
                    except Exception as exc:  # queued hand-offs do not raise; be sure anyway
                        item.error = exc
        except BaseException as exc:
            for item in batch:
                if item.event is None and item.error is None:
                    item.error = exc
            raise
        finally:
            for item in batch:
                if item.event is None and item.error is None:
                    item.error = RuntimeError("the group commit did not write this event")
                item.done.set()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def create_tables(self) -> None:
        """Create the log's tables where missing, and add what a newer version needs to a log
        an older one made (the idempotency key), for sites that do not run Alembic."""
        metadata.create_all(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            have = {c["name"] for c in inspect(conn).get_columns("realtime_events")}
            if "idempotency_key" not in have:
                conn.execute(text(
                    f"ALTER TABLE realtime_events ADD COLUMN idempotency_key "
                    f"VARCHAR({KEY_LENGTH})"
                ))
            indexes = {i["name"] for i in inspect(conn).get_indexes("realtime_events")}
            if "uq_realtime_events_stream_key" not in indexes:
                conn.execute(text(
                    "CREATE UNIQUE INDEX uq_realtime_events_stream_key "
                    "ON realtime_events (stream, idempotency_key)"
                ))

    def append(
        self,
        stream: str,
        type_: str,
        data: object,
        connection: Connection | None = None,
        announce: Callable[[Connection, Event], None] | None = None,
        key: str | None = None,
    ) -> Event:
        """Number and store one event, in a transaction of its own or in ``connection``'s.

        :param connection: a connection inside the caller's transaction (a request's session):
            the event then commits, or rolls back, with the caller's own rows.
        :param announce: called with the connection and the event before the commit, for a
            broker that announces inside the transaction (PostgreSQL NOTIFY).
        :param key: an idempotency key. If ``stream`` already holds an event stored with it,
            that event comes back with ``replayed=True`` and nothing is stored or announced
            (the stream's counter is not bumped either, so no gap appears).
        :raises PublishTimeout: PostgreSQL kept the stream's counter row locked past
            :attr:`lock_timeout` (another transaction that appended to it is still open).
        """
        if connection is not None:
            if key is None:
                return self._append_on(connection, stream, type_, data, announce, local=False)
            return self._append_keyed(connection, stream, type_, data, announce, key)
        try:
            with self.engine.begin() as conn:
                return self._append_unless_stored(conn, stream, type_, data, announce, key,
                                                  local=True)
        except IntegrityError:
            # The same key in another transaction that committed first (PostgreSQL: SQLite's
            # publishers are in line and saw it above). Ours rolled back whole: no gap.
            if key is None:
                raise
            with self.engine.connect() as conn:
                found = self._by_key(conn, stream, key)
            if found is None:
                raise
            return found

    def _append_keyed(
        self,
        conn: Connection,
        stream: str,
        type_: str,
        data: object,
        announce: Callable[[Connection, Event], None] | None,
        key: str,
    ) -> Event:
        """A keyed append in the caller's transaction.

        PostgreSQL takes concurrent writers, so two transactions may both find no event with
        the key and both append: the second one's insert waits for the first's commit, then
        collides on the unique index. A savepoint takes back that one's counter bump and lets
        its transaction go on with the first event. SQLite has one writer at a time; the rare
        collision (a concurrent commit between our read and our first write) raises
        ``IntegrityError`` into the caller's transaction, which rolls back whole. (No
        savepoint there: pysqlite would open the transaction with it and commit it on release.)
        """
        if conn.dialect.name != "postgresql":
            return self._append_unless_stored(conn, stream, type_, data, announce, key,
                                              local=False)
        found = self._by_key(conn, stream, key)
        if found is not None:
            return found
        savepoint = conn.begin_nested()
        try:
            event = self._append_on(conn, stream, type_, data, announce, local=False, key=key)
        except IntegrityError:
            savepoint.rollback()
            found = self._by_key(conn, stream, key)
            if found is None:
                raise
            return found
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        return event

    def _append_unless_stored(
        self,
        conn: Connection,
        stream: str,
        type_: str,
        data: object,
        announce: Callable[[Connection, Event], None] | None,
        key: str | None,
        local: bool,
    ) -> Event:
        """The event already stored on ``stream`` with ``key`` (``replayed``), or a new one
        appended on ``conn``."""
        if key is not None:
            found = self._by_key(conn, stream, key)
            if found is not None:
                return found
        return self._append_on(conn, stream, type_, data, announce, local=local, key=key)

    @staticmethod
    def _by_key(conn: Connection, stream: str, key: str) -> Event | None:
        row = conn.execute(
            select(events.c.id, events.c.seq, events.c.type, events.c.payload).where(
                events.c.stream == stream, events.c.idempotency_key == key
            )
        ).first()
        if row is None:
            return None
        row_id, seq, type_, payload = row
        return Event(stream, seq, type_, payload, row_id, replayed=True)

    def find(self, stream: str, key: str) -> Event | None:
        """The event stored on ``stream`` with idempotency ``key``, if it is still kept."""
        with self.engine.connect() as conn:
            return self._by_key(conn, stream, key)

    def _append_on(
        self,
        conn: Connection,
        stream: str,
        type_: str,
        data: object,
        announce: Callable[[Connection, Event], None] | None,
        local: bool,
        key: str | None = None,
    ) -> Event:
        data_json = _dumps(data)  # before any statement: data that is not JSON costs nothing
        postgres = conn.dialect.name == "postgresql"
        previous = None
        if postgres:
            # Never wait for ever on a stream whose counter row another transaction holds. In
            # our own transaction SET LOCAL is enough; in the caller's, the caller's setting is
            # put back afterwards so the rest of its transaction is unchanged.
            timeout = f"{max(1, int(self.lock_timeout * 1000))}ms"
            if local:
                conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": timeout})
            else:
                previous = conn.execute(
                    text(
                        "SELECT current_setting('lock_timeout'), "
                        "set_config('lock_timeout', :t, true)"
                    ),
                    {"t": timeout},
                ).scalar()
        try:
            seq = conn.execute(_NEXT_SEQ, {"name": stream}).scalar_one()
        except OperationalError as exc:
            if postgres and getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise PublishTimeout(
                    f"stream {stream!r} stayed locked by another transaction for "
                    f"{self.lock_timeout:g}s"
                ) from exc
            raise
        payload = _assemble(stream, seq, type_, data_json)
        row_id = conn.execute(
            events.insert().values(
                stream=stream, seq=seq, type=type_, payload=payload, created_at=time.time(),
                idempotency_key=key,
            )
        ).inserted_primary_key[0]
        if previous is not None:
            conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": previous})
        event = Event(stream, seq, type_, payload, row_id)
        if announce is not None:
            announce(conn, event)
        return event

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
        rows = _HEAD.rows(self.engine, {"name": stream})
        return int(rows[0][0]) if rows else 0

    def seq_at(self, stream: str, when: float) -> int:
        """Where ``stream`` stood at ``when`` (a time.time()): its last event stored by then.

        For a subscription "from the head" whose head could not be read at the time: it starts
        where the stream stood when the client asked. Events pruned since count as before.
        """
        with self.engine.connect() as conn:
            stored = events.c.stream == stream
            before = conn.execute(
                select(func.max(events.c.seq)).where(stored, events.c.created_at <= when)
            ).scalar()
            if before is not None:
                return int(before)
            after = conn.execute(
                select(func.min(events.c.seq)).where(stored, events.c.seq.is_not(None))
            ).scalar()
        return int(after) - 1 if after is not None else self.head(stream)

    def heads(self, names: list[str]) -> dict[str, int]:
        """The head of each named stream that has events (others are absent), in one query per
        :data:`IN_CHUNK` names, each list padded to a few lengths (see :func:`padded`)."""
        found: dict[str, int] = {}
        for start in range(0, len(names), IN_CHUNK):
            chunk = padded(names[start : start + IN_CHUNK])
            values = {f"name_{i}": name for i, name in enumerate(chunk)}
            rows = _HEADS.rows(self.engine, values, len(chunk))
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

    def prune(
        self,
        max_age: float | None,
        per_stream: int | None,
        batch: int = 2000,
        budget: float = 1.0,
        now: float | None = None,
    ) -> int:
        """Delete events past the retention policy, a bounded batch per transaction.

        :param max_age: seconds an event is kept (``None``: no age limit).
        :param per_stream: events kept per stream, the newest (``None``: no count limit).
        :param batch: rows deleted per transaction, so no publisher waits long behind us.
        :param budget: seconds of work at most; the rest waits for the next call.
        :returns: rows deleted.

        A client that resumes from before what is left is told so (``reset``): see
        ``commands.catch_up``. Stream heads (``realtime_streams``) are never deleted, so event
        numbers are never reused.
        """
        deadline = time.monotonic() + budget
        now = time.time() if now is None else now
        deleted = 0

        def delete_batch(condition: object) -> int:
            chosen = select(events.c.id).where(condition).limit(batch)
            with self.writing(min(5.0, max(0.1, budget))):
                with self.engine.begin() as conn:
                    return conn.execute(delete(events).where(events.c.id.in_(chosen))).rowcount

        if max_age is not None:
            cutoff = now - max_age
            while time.monotonic() < deadline:
                count = delete_batch(events.c.created_at < cutoff)
                deleted += count
                if count < batch:
                    break
        if per_stream is not None and time.monotonic() < deadline:
            with self.engine.connect() as conn:
                long_streams = conn.execute(
                    select(streams.c.name, streams.c.last_seq).where(
                        streams.c.last_seq > per_stream
                    )
                ).all()
            for name, last_seq in long_streams:
                cut = int(last_seq) - per_stream
                while time.monotonic() < deadline:
                    count = delete_batch((events.c.stream == name) & (events.c.seq <= cut))
                    deleted += count
                    if count < batch:
                        break
                if time.monotonic() >= deadline:
                    break
        return deleted

    def prune_ephemeral(self, older_than: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(events).where(events.c.seq.is_(None), events.c.created_at < older_than)
            )


def site_identity(url: URL) -> str:
    """A short id for the database behind ``url``: the same for every process of one site.

    The password and the driver are left out (a CLI may use another driver than the workers),
    and a SQLite path is made absolute, so two processes that reach one database agree. Two
    sites on two databases never do, which is what keeps their broker traffic apart.
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            database = os.path.realpath(database)
        key = f"sqlite:{database}"
    else:
        host = (url.host or "").lower()
        key = f"{backend}://{url.username or ''}@{host}:{url.port or ''}/{url.database or ''}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]
