"""Fan-out between processes: in-process, Redis pub/sub, or the durable log itself.

A broker only announces; the durable log is the truth. Each broker hands messages to ``deliver``
on a thread of its own (never the publisher's), in batches of what has arrived (so a burst costs
one send per socket per batch, not per message), and calls ``resync`` after any gap in its own
service (a Redis reconnect), which makes every connection catch up from the log.

Publishers never wait for a broker either: what a publisher hands over goes into a bounded queue
that one thread per process sends (:class:`Sender`). A broker that hangs fills the queue, the
excess is dropped and counted, and followers get those events from the log by the periodic
sweep: slower, never lost.

Every message a shared broker carries is stamped with the site's id, and a listener drops
messages stamped with another id: two sites that share one Redis (or one channel by mistake)
never see each other's events.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .store import Event, EventStore

log = logging.getLogger("tidings.realtime")

#: Receives messages in publication order, several at a time when they arrived together.
Deliver = Callable[[list[dict[str, Any]]], None]

#: Most messages handed over in one batch.
BATCH = 256
#: Messages a process may have waiting for a slow broker before it drops (and counts) the rest.
SEND_QUEUE = 10000


class Sender:
    """A bounded queue and one thread that sends it: publishers hand over and return at once.

    Started lazily in the process that publishes (a queue inherited across ``fork`` is
    discarded, like the thread that would have drained it). Messages leave in the order they
    were handed over, several per round trip when they queue up.
    """

    def __init__(self, name: str, send: Callable[[list[dict[str, Any]]], None],
                 capacity: int = SEND_QUEUE):
        self.name = name
        self._send = send
        self.capacity = capacity
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._pid = 0
        self._stopping = False
        self._sending = False
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self._warned = 0.0

    def put(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False (and counted) when the queue is full."""
        with self._cond:
            if self._pid != os.getpid():
                self._queue.clear()
                self._pid = os.getpid()
                self._stopping = False
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
                # A command or job that exits right after publishing must not take its last
                # messages with it (they would reach followers only by the sweep).
                atexit.register(self.flush)
            if len(self._queue) >= self.capacity:
                self.dropped += 1
                self._warn("%s broker send queue full (%d); dropped, the sweep delivers from the "
                           "log", self.name, self.capacity)
                return False
            self._queue.append(message)
            self._cond.notify()
            return True

    def backlog(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout`` seconds) until everything queued has been sent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._sending) and self._pid == os.getpid():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _warn(self, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned > 10:  # a hung broker must not flood the log too
            self._warned = now
            log.warning(*args)

    def _run(self) -> None:
        pid = os.getpid()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping or self._pid != pid:
                    return
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                self._sending = True
            try:
                self._send(batch)
                self.sent += len(batch)
            except Exception as exc:
                # The events are in the log already: followers get them from the sweep.
                self.errors += len(batch)
                self._warn("%s broker send failed (%s); clients catch up from the log",
                           self.name, exc)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()


class Broker:
    name = "base"

    def __init__(self) -> None:
        #: Set once the broker can carry messages to this process (its listener is connected).
        self.ready = threading.Event()
        #: This site's id (``RealtimeState.site_id``): stamped on what we send, checked on what
        #: we receive.
        self.site = ""
        self.foreign = 0

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Start receiving (a serving process); publishing needs no start."""
        raise NotImplementedError

    def publish(self, message: dict[str, Any]) -> None:
        """Announce ``message``; never blocks (see :class:`Sender`)."""
        raise NotImplementedError

    def wait_for_room(self, max_lag: float, timeout: float) -> float:
        """Hold a publisher while this process's fan-out is behind (see
        :class:`DispatchQueue`); brokers whose fan-out runs elsewhere return at once."""
        return 0.0

    def announce_in(self, connection: Any, event: Event) -> bool:
        """Announce a stored event inside the transaction that stores it, if this broker can.

        True when done: the announcement then leaves with the commit or not at all.
        """
        return False

    def stop(self) -> None:
        """Stop this process's broker threads (tests, a publisher that is done)."""

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "state": "connected"}

    @property
    def connected(self) -> bool:
        """True while what other processes publish reaches this one (their disconnects too)."""
        return getattr(self, "_state", "connected") == "connected"

    def _stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        message["site"] = self.site
        return message

    def _ours(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        mine = [m for m in batch if m.get("site") == self.site]
        if len(mine) != len(batch):
            self.foreign += len(batch) - len(mine)
            log.warning("ignored %d broker message(s) of another site (site id %s is ours); "
                        "give each site its own REALTIME_REDIS_CHANNEL", len(batch) - len(mine),
                        self.site)
        return mine


class DispatchQueue:
    """What waits for this process's fan-out, with the moment each message arrived.

    The dispatcher takes everything there is (up to :data:`BATCH`) as soon as it is free: a
    batch never waits to fill up. What it cannot bound alone is the queue itself: when
    publishers hand over events faster than the fan-out writes them (a burst of one broadcast
    per request to a thousand sockets), the queue grows and every event waits for all those
    before it, out of sight of the publishers, who are answered at once. :meth:`wait_for_room`
    is the backpressure that makes the wait visible where it belongs: a publisher of this
    process waits (briefly, boundedly) while the oldest queued message has waited longer than
    the allowed lag, so a burst runs at the speed of the fan-out and each event's wait for its
    batch stays near that lag instead of growing with the burst.
    """

    def __init__(self) -> None:
        self._items: deque[tuple[float, dict[str, Any] | None]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the dispatcher waits here ...
        self._room = threading.Condition(self._lock)  # ... publishers held back here
        self._held = 0
        self._dispatcher: int | None = None
        #: Publishes that waited for room, and the seconds they waited in all.
        self.waits = 0
        self.waited = 0.0
        #: Seconds the last batch's oldest message waited in the queue.
        self.lag = 0.0

    def put(self, message: dict[str, Any] | None, now: float | None = None) -> None:
        with self._lock:
            self._items.append((time.monotonic() if now is None else now, message))
            self._ready.notify()

    def take(self, most: int = BATCH, now: float | None = None) -> list[dict[str, Any] | None]:
        """Everything queued, up to ``most`` messages (waits for the first); ``None`` is a stop."""
        with self._lock:
            self._dispatcher = threading.get_ident()
            while not self._items:
                self._ready.wait()
            now = time.monotonic() if now is None else now
            self.lag = now - self._items[0][0]
            batch = []
            while self._items and len(batch) < most:
                batch.append(self._items.popleft()[1])
            if self._held:
                self._room.notify_all()
            return batch

    def behind(self, max_lag: float, now: float) -> bool:
        """True while the oldest queued message has waited longer than ``max_lag``."""
        return bool(self._items) and now - self._items[0][0] > max_lag

    def wait_for_room(self, max_lag: float, timeout: float) -> float:
        """Hold a publisher while the fan-out is more than ``max_lag`` seconds behind, at most
        ``timeout`` seconds (then it goes ahead: being behind never fails a publish).

        The dispatcher itself (a listener that publishes) never waits: it would wait for itself.

        :returns: the seconds waited (0.0 almost always).
        """
        if threading.get_ident() == self._dispatcher:
            return 0.0
        with self._lock:
            start = now = time.monotonic()
            if not self.behind(max_lag, now):
                return 0.0
            deadline = start + timeout
            self._held += 1
            try:
                while self.behind(max_lag, now) and now < deadline:
                    self._room.wait(deadline - now)
                    now = time.monotonic()
            finally:
                self._held -= 1
            self.waits += 1
            self.waited += now - start
            return now - start

    def __len__(self) -> int:
        return len(self._items)


class MemoryBroker(Broker):
    """One worker: a queue drained by a dispatcher thread, so publishers never touch sockets."""

    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._queue = DispatchQueue()
        self._started = False

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        self._started = True

        def run() -> None:
            while True:
                batch = self._queue.take()
                stop = None in batch
                messages = [m for m in batch if m is not None]
                if messages:
                    try:
                        deliver(messages)
                    except Exception:
                        log.exception("realtime dispatch failed")
                if stop:
                    return

        threading.Thread(target=run, name="tidings-dispatch", daemon=True).start()
        self.ready.set()

    def publish(self, message: dict[str, Any]) -> None:
        if self._started:  # a process that only publishes has nobody to deliver to
            self._queue.put(message)

    def wait_for_room(self, max_lag: float, timeout: float) -> float:
        if not self._started:
            return 0.0
        return self._queue.wait_for_room(max_lag, timeout)

    def stop(self) -> None:
        self._queue.put(None)

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "state": "connected", "backlog": len(self._queue),
                "lag_ms": round(self._queue.lag * 1000, 2),
                "publisher_waits": self._queue.waits,
                "publisher_waited_s": round(self._queue.waited, 3)}


class ListeningBroker(Broker):
    """A broker whose messages arrive on a connection of its own (Redis pub/sub, PostgreSQL
    LISTEN): one listener thread, kept alive through outages with a capped backoff, and a
    resync after every reconnect, because what was published meanwhile is gone from the
    channel (not from the log)."""

    thread_name = "tidings-listen"

    def __init__(self) -> None:
        super().__init__()
        self._state = "connecting"
        self.reconnects = 0
        self._stopping = threading.Event()
        self.sender = Sender(self.thread_name + "-send", self._send)

    @property
    def publish_errors(self) -> int:
        return self.sender.errors + self.sender.dropped

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        threading.Thread(
            target=self._listen, args=(deliver, resync), name=self.thread_name, daemon=True
        ).start()

    def stop(self) -> None:
        self._stopping.set()
        self.sender.stop()

    def publish(self, message: dict[str, Any]) -> None:
        self.sender.put(self._stamp(message))

    def _send(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _session(self) -> AbstractContextManager[Iterator[list[dict[str, Any]]]]:
        """Connect and subscribe; the value is an iterator of message batches (empty batches
        while idle, so the loop notices :meth:`stop`)."""
        raise NotImplementedError

    def _listen(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        backoff = 0.2
        first = True
        while not self._stopping.is_set():
            try:
                with self._session() as batches:
                    self._state = "connected"
                    backoff = 0.2
                    if not first:
                        self.reconnects += 1
                        resync()
                    first = False
                    self.ready.set()
                    for batch in batches:
                        if self._stopping.is_set():
                            return
                        batch = self._ours(batch)
                        if not batch:
                            continue
                        try:
                            deliver(batch)
                        except Exception:
                            log.exception("realtime dispatch failed")
            except Exception as exc:  # connection refused or reset, a restart of the server ...
                if self._stopping.is_set():
                    return
                self._state = "reconnecting"
                log.warning(
                    "%s broker lost its connection (%s); retrying in %.1fs", self.name, exc, backoff
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "state": self._state,
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
            "send_backlog": self.sender.backlog(),
            "foreign": self.foreign,
        }


class RedisBroker(ListeningBroker):
    """Several workers or hosts: Redis pub/sub."""

    name = "redis"
    thread_name = "tidings-redis"

    def __init__(self, url: str, channel: str, site: str = "", timeout: float = 5.0):
        import redis

        super().__init__()
        self.site = site
        self._timeout = timeout
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._sending = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._channel = channel
        self._lag_ms = 0.0

    @contextmanager
    def _session(self) -> Iterator[Iterator[list[dict[str, Any]]]]:
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(self._channel)
            # Connected once Redis confirms the subscription: from then on nothing is missed.
            deadline = time.monotonic() + self._timeout
            while True:
                item = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if item is not None and item["type"] == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise ConnectionError("redis did not confirm the subscription")
            yield self._batches(pubsub)
        finally:
            try:
                pubsub.close()
            except Exception:
                pass

    def _batches(self, pubsub: Any) -> Iterator[list[dict[str, Any]]]:
        heard = time.monotonic()
        pinged = 0.0
        while True:
            item = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if item is None:
                # A Redis that hangs (rather than closes) looks idle: ping it when quiet, and
                # call it lost when not even the pong comes back, so the state says so and a
                # resync follows once it answers again.
                if now - heard > self._timeout and now - pinged > self._timeout:
                    pubsub.ping()
                    pinged = now
                if pinged and now - heard > 2 * self._timeout + 1 and now - pinged > self._timeout:
                    raise ConnectionError(f"redis sent nothing for {now - heard:.0f}s")
                yield []
                continue
            heard = now
            batch = []
            while item is not None:
                if item["type"] == "message":
                    batch.append(json.loads(item["data"]))
                if len(batch) >= BATCH:
                    break
                item = pubsub.get_message(timeout=0.0)  # whatever else has already arrived
            if not batch:
                continue
            sent = batch[-1].get("sent")
            if sent:
                self._lag_ms = max(0.0, (time.time() - sent) * 1000)
            yield batch

    def publish(self, message: dict[str, Any]) -> None:
        message["sent"] = time.time()
        super().publish(message)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        pipe = self._sending.pipeline(transaction=False)
        for message in batch:
            pipe.publish(self._channel, json.dumps(message, separators=(",", ":")))
        pipe.execute()

    def stop(self) -> None:
        super().stop()
        for client in (self._redis, self._sending):
            try:
                client.close()
            except Exception:
                pass

    def state(self) -> dict[str, Any]:
        return {**super().state(), "lag_ms": round(self._lag_ms, 2)}


class DatabaseBroker(Broker):
    """Several workers and no Redis: every worker tails the durable log, so nothing is confined
    to the process that published it. Slower than Redis (a poll), but never silently lossy."""

    name = "database"

    def __init__(self, store: EventStore, interval: float):
        super().__init__()
        self._store = store
        self._interval = interval
        self._state = "starting"
        self._wake = threading.Event()
        self._stopping = False
        self.sender = Sender("tidings-dblog-send", self._send)

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        threading.Thread(
            target=self._poll, args=(deliver,), name="tidings-dbpoll", daemon=True
        ).start()

    def _poll(self, deliver: Deliver) -> None:
        last = None
        pruned = 0.0
        while not self._stopping:
            try:
                if last is None:
                    last = self._store.last_id()
                    self.ready.set()
                batch = []
                for event in self._store.tail(last):
                    last = event.id
                    if event.stream == "__control__":
                        batch.append(json.loads(event.payload))
                    else:
                        batch.append(
                            {
                                "k": "event",
                                "stream": event.stream,
                                "seq": event.seq,
                                "payload": event.payload,
                            }
                        )
                if batch:
                    deliver(batch)
                self._state = "connected"
                if time.time() - pruned > 30:
                    self._store.prune_ephemeral(time.time() - 60)
                    pruned = time.time()
            except Exception:
                self._state = "reconnecting"
                log.exception("database broker poll failed")
            self._wake.wait(self._interval)
            self._wake.clear()

    def publish(self, message: dict[str, Any]) -> None:
        if message["k"] != "event" or message.get("seq") is None:
            self.sender.put(message)
        # A stored event is in the log already, which is what every poller reads.
        self._wake.set()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        for message in batch:
            if message["k"] != "event":
                self._store.append_raw("__control__", json.dumps(message, separators=(",", ":")))
            else:
                self._store.append_raw(message["stream"], message["payload"])
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.sender.stop()

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "state": self._state,
            "publish_errors": self.sender.errors + self.sender.dropped,
        }


class PostgresBroker(ListeningBroker):
    """Several workers on a site that already runs PostgreSQL: LISTEN/NOTIFY, no extra service.

    A notification carries the message when it fits PostgreSQL's 8000-byte payload limit; a
    larger stored event is announced by its (stream, seq) and read from the log by each listener.
    A stored event is announced inside the transaction that stores it (NOTIFY is delivered at
    commit), so it costs no connection of its own and is never announced without being stored.
    """

    name = "postgres"
    thread_name = "tidings-pglisten"
    MAX_PAYLOAD = 7900

    def __init__(self, store: EventStore, channel: str, site: str = ""):
        super().__init__()
        self.site = site
        self._store = store
        self._channel = channel

    def _dsn(self) -> str:
        url = self._store.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    @contextmanager
    def _session(self) -> Iterator[Iterator[list[dict[str, Any]]]]:
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'LISTEN "{self._channel}"')
            yield self._batches(conn)

    def _batches(self, conn: Any) -> Iterator[list[dict[str, Any]]]:
        while True:
            got = False
            for note in conn.notifies(timeout=1.0):
                got = True
                message = json.loads(note.payload)
                if message.get("k") == "event" and "payload" not in message:
                    if message.get("site") != self.site:
                        yield [message]  # foreign: counted and dropped, never looked up
                        continue
                    message["payload"] = self._store.payload(message["stream"], message["seq"])
                    if message["payload"] is None:
                        continue
                yield [message]
            if not got:
                yield []

    def _body(self, message: dict[str, Any]) -> str | None:
        body = json.dumps(self._stamp(message), separators=(",", ":"))
        if len(body) > self.MAX_PAYLOAD:
            if message.get("k") != "event" or message.get("seq") is None:
                log.warning(
                    "ephemeral message of %d bytes dropped: too large for NOTIFY", len(body)
                )
                return None
            body = json.dumps(
                {"k": "event", "stream": message["stream"], "seq": message["seq"],
                 "site": self.site},
                separators=(",", ":"),
            )
        return body

    def announce_in(self, connection: Any, event: Event) -> bool:
        from sqlalchemy import text

        body = self._body(
            {"k": "event", "stream": event.stream, "seq": event.seq, "payload": event.payload}
        )
        if body is not None:
            connection.execute(
                text("SELECT pg_notify(:channel, :body)"),
                {"channel": self._channel, "body": body},
            )
        return True

    def _send(self, batch: list[dict[str, Any]]) -> None:
        from sqlalchemy import text

        bodies = [body for body in map(self._body, batch) if body is not None]
        if bodies:
            with self._store.engine.begin() as conn:
                for body in bodies:
                    conn.execute(
                        text("SELECT pg_notify(:channel, :body)"),
                        {"channel": self._channel, "body": body},
                    )
