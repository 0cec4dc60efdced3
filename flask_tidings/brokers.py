"""Fan-out between processes: in-process, Redis pub/sub, or the durable log itself.

A broker only announces; the durable log is the truth. Each broker hands messages to ``deliver``
on a thread of its own (never the publisher's), in batches of what has arrived (so a burst costs
one send per socket per batch, not per message), and calls ``resync`` after any gap in its own
service (a Redis reconnect), which makes every connection catch up from the log.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .store import EventStore

log = logging.getLogger("tidings.realtime")

#: Receives messages in publication order, several at a time when they arrived together.
Deliver = Callable[[list[dict[str, Any]]], None]

#: Most messages handed over in one batch.
BATCH = 256


class Broker:
    name = "base"

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        raise NotImplementedError

    def publish(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "state": "connected"}


class MemoryBroker(Broker):
    """One worker: a queue drained by a dispatcher thread, so publishers never touch sockets."""

    name = "memory"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._started = False

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        self._started = True

        def run() -> None:
            while True:
                batch = [self._queue.get()]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    deliver(batch)
                except Exception:
                    log.exception("realtime dispatch failed")

        threading.Thread(target=run, name="tidings-dispatch", daemon=True).start()

    def publish(self, message: dict[str, Any]) -> None:
        if self._started:  # a process that only publishes has nobody to deliver to
            self._queue.put(message)

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "state": "connected", "backlog": self._queue.qsize()}


class ListeningBroker(Broker):
    """A broker whose messages arrive on a connection of its own (Redis pub/sub, PostgreSQL
    LISTEN): one listener thread, kept alive through outages with a capped backoff, and a
    resync after every reconnect, because what was published meanwhile is gone from the
    channel (not from the log)."""

    thread_name = "tidings-listen"

    def __init__(self) -> None:
        self._state = "connecting"
        self.reconnects = 0
        self.publish_errors = 0

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        threading.Thread(
            target=self._listen, args=(deliver, resync), name=self.thread_name, daemon=True
        ).start()

    def _session(self) -> AbstractContextManager[Iterator[list[dict[str, Any]]]]:
        """Connect and subscribe; the value is an endless iterator of message batches."""
        raise NotImplementedError

    def _listen(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        backoff = 0.2
        first = True
        while True:
            try:
                with self._session() as batches:
                    self._state = "connected"
                    backoff = 0.2
                    if not first:
                        self.reconnects += 1
                        resync()
                    first = False
                    for batch in batches:
                        try:
                            deliver(batch)
                        except Exception:
                            log.exception("realtime dispatch failed")
            except Exception as exc:  # connection refused or reset, a restart of the server ...
                self._state = "reconnecting"
                log.warning(
                    "%s broker lost its connection (%s); retrying in %.1fs", self.name, exc, backoff
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


class RedisBroker(ListeningBroker):
    """Several workers or hosts: Redis pub/sub."""

    name = "redis"
    thread_name = "tidings-redis"

    def __init__(self, url: str, channel: str):
        import redis

        super().__init__()
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._channel = channel
        self._lag_ms = 0.0

    @contextmanager
    def _session(self) -> Iterator[Iterator[list[dict[str, Any]]]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._channel)
            yield self._batches(pubsub)
        finally:
            try:
                pubsub.close()
            except Exception:
                pass

    def _batches(self, pubsub: Any) -> Iterator[list[dict[str, Any]]]:
        while True:
            item = pubsub.get_message(timeout=1.0)
            if item is None:
                continue
            batch = [json.loads(item["data"])]
            while len(batch) < BATCH:  # whatever else has already arrived
                item = pubsub.get_message(timeout=0.0)
                if item is None:
                    break
                batch.append(json.loads(item["data"]))
            sent = batch[-1].get("sent")
            if sent:
                self._lag_ms = max(0.0, (time.time() - sent) * 1000)
            yield batch

    def publish(self, message: dict[str, Any]) -> None:
        message["sent"] = time.time()
        try:
            self._redis.publish(self._channel, json.dumps(message, separators=(",", ":")))
        except Exception as exc:
            # The event is in the log already; subscribers resync when they see Redis again,
            # and the periodic sweep picks it up if they never lost it.
            self.publish_errors += 1
            log.warning("redis publish failed (%s); clients will catch up from the log", exc)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "state": self._state,
            "lag_ms": round(self._lag_ms, 2),
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
        }


class DatabaseBroker(Broker):
    """Several workers and no Redis: every worker tails the durable log, so nothing is confined
    to the process that published it. Slower than Redis (a poll), but never silently lossy."""

    name = "database"

    def __init__(self, store: EventStore, interval: float):
        self._store = store
        self._interval = interval
        self._state = "starting"
        self._wake = threading.Event()

    def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        threading.Thread(
            target=self._poll, args=(deliver,), name="tidings-dbpoll", daemon=True
        ).start()

    def _poll(self, deliver: Deliver) -> None:
        last = None
        pruned = 0.0
        while True:
            try:
                if last is None:
                    last = self._store.last_id()
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
        if message["k"] != "event":
            self._store.append_raw("__control__", json.dumps(message, separators=(",", ":")))
        elif message.get("seq") is None:
            self._store.append_raw(message["stream"], message["payload"])
        # A stored event is in the log already, which is what every poller reads.
        self._wake.set()

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "state": self._state}


class PostgresBroker(ListeningBroker):
    """Several workers on a site that already runs PostgreSQL: LISTEN/NOTIFY, no extra service.

    A notification carries the message when it fits PostgreSQL's 8000-byte payload limit; a
    larger stored event is announced by its (stream, seq) and read from the log by each listener.
    """

    name = "postgres"
    thread_name = "tidings-pglisten"
    MAX_PAYLOAD = 7900

    def __init__(self, store: EventStore, channel: str):
        super().__init__()
        self._store = store
        self._channel = channel

    def _dsn(self) -> str:
        url = self._store.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    @contextmanager
    def _session(self) -> Iterator[Iterator[list[dict[str, Any]]]]:
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True) as conn:
            conn.execute(f'LISTEN "{self._channel}"')
            yield self._batches(conn)

    def _batches(self, conn: Any) -> Iterator[list[dict[str, Any]]]:
        while True:
            for note in conn.notifies(timeout=1.0):
                message = json.loads(note.payload)
                if message.get("k") == "event" and "payload" not in message:
                    message["payload"] = self._store.payload(message["stream"], message["seq"])
                    if message["payload"] is None:
                        continue
                yield [message]

    def publish(self, message: dict[str, Any]) -> None:
        from sqlalchemy import text

        body = json.dumps(message, separators=(",", ":"))
        if len(body) > self.MAX_PAYLOAD:
            if message.get("k") != "event" or message.get("seq") is None:
                log.warning(
                    "ephemeral message of %d bytes dropped: too large for NOTIFY", len(body)
                )
                return
            body = json.dumps(
                {"k": "event", "stream": message["stream"], "seq": message["seq"]},
                separators=(",", ":"),
            )
        try:
            with self._store.engine.begin() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, :body)"),
                    {"channel": self._channel, "body": body},
                )
        except Exception as exc:
            self.publish_errors += 1
            log.warning("postgres NOTIFY failed (%s); clients will catch up from the log", exc)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "state": self._state,
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
        }
