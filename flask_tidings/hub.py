"""This process's registry of connections: who follows which stream, and local fan-out.

Delivery to a client (the connection's job) is kept apart from fan-out between processes (the
broker's job). The hub copies the recipients under its lock and writes outside it, so a
subscribe or a disconnect never waits for a fan-out in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from . import frames, ordering
from .connection import Connection

log = logging.getLogger("tidings.realtime")

#: Seconds a user's disconnect (logout, deactivation) is remembered, so that a handshake that
#: was already in flight when it arrived is closed as soon as its connection registers.
REVOCATION_MEMORY = 300.0


class Hub:
    def __init__(self, order_wait: float = ordering.WAIT) -> None:
        self._lock = threading.Lock()
        #: One fan-out at a time (the broker's dispatcher, or the flusher of held events), so
        #: the events of a stream reach each follower in the order :class:`StreamOrder` chose.
        self._fanning = threading.Condition(threading.Lock())
        self.order = ordering.StreamOrder(order_wait)
        self._flusher: threading.Thread | None = None
        self._closed = False
        self._streams: dict[str, set[Connection]] = defaultdict(set)
        self._users: dict[str, set[Connection]] = defaultdict(set)
        self._revoked: dict[str, tuple[float, int, str]] = {}
        self.published = 0
        self.delivered_live = 0

    def add(self, conn: Connection, since: float | None = None) -> tuple[int, str] | None:
        """Register ``conn``, whose handshake began at ``since`` (``time.monotonic()``).

        Returns ``(code, reason)`` if its user was disconnected after that moment: the handshake
        authenticated a session that no longer exists, and the caller closes the connection.
        Registering and checking happen under the lock :meth:`disconnect_user` takes, so a
        disconnect either finds the connection here or is found by it, never neither.
        """
        user = conn.identity.user_id
        with self._lock:
            self._users[user].add(conn)
            revoked = self._revoked.get(user)
        if since is not None and revoked is not None and revoked[0] >= since:
            return revoked[1], revoked[2]
        return None

    def disconnect_user(
        self, user_id: str, code: int, reason: str, now: float
    ) -> list[Connection]:
        """Remember that ``user_id`` was disconnected at ``now``; their connections, to close."""
        with self._lock:
            self._revoked[user_id] = (now, code, reason)
            if len(self._revoked) > 1024:
                for key in [k for k, v in self._revoked.items() if now - v[0] > REVOCATION_MEMORY]:
                    del self._revoked[key]
            return list(self._users.get(user_id, ()))

    def remove(self, conn: Connection) -> None:
        with self._lock:
            for name in list(conn.streams):
                self._discard(name, conn)
            users = self._users.get(conn.identity.user_id)
            if users is not None:
                users.discard(conn)
                if not users:
                    del self._users[conn.identity.user_id]

    def subscribe(self, conn: Connection, stream: str) -> None:
        with self._lock:
            self._streams[stream].add(conn)

    def subscribe_many(self, conn: Connection, streams: list[str]) -> None:
        """Several streams under one acquisition of the lock (a subscribe of several)."""
        with self._lock:
            for stream in streams:
                self._streams[stream].add(conn)

    def unsubscribe(self, conn: Connection, stream: str) -> None:
        with self._lock:
            self._discard(stream, conn)

    def _discard(self, stream: str, conn: Connection) -> None:
        members = self._streams.get(stream)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._streams[stream]

    def dispatch(self, events: list[tuple[str, int | None, str]]) -> int:
        """Write events (stream, seq, payload) to every local follower; returns deliveries.

        Each event's frame is encoded once. Events that arrived together are grouped by stream,
        so a follower gets all of a stream's new events in one ``send``: under a burst the cost
        per delivery falls instead of rising. An event that came ahead of an earlier one of its
        stream waits a moment for it (ordering.py).
        """
        by_stream: dict[str, list[tuple[int | None, bytes]]] = {}
        for stream, seq, payload in events:
            by_stream.setdefault(stream, []).append((seq, frames.text(payload)))
        self.published += len(events)
        with self._fanning:
            if self._closed:  # no flusher would let a held event go: hold nothing
                return self._fan_out(by_stream)
            now = time.monotonic()
            held = self.order.held
            ready = {stream: self.order.arrive(stream, items, now)
                     for stream, items in by_stream.items()}
            for stream, items in self.order.due(now).items():
                ready[stream] = ready.get(stream, []) + items
            if self.order.held != held:
                self._start_flusher()
                self._fanning.notify()
            return self._fan_out(ready)

    def _fan_out(self, ready: dict[str, list[tuple[int | None, bytes]]]) -> int:
        reached = 0
        for stream, items in ready.items():
            if items:
                for conn in self.followers(stream):
                    try:
                        reached += conn.offer_many(stream, items)
                    except Exception:
                        # One connection's failure (its command pool gone at exit, say) must not
                        # cost the others their events, nor the flusher its thread: the sweep
                        # brings this one up to date if it lives on.
                        log.exception("realtime fan-out failed conn=%s stream=%s", conn.id,
                                      stream)
        self.delivered_live += reached
        return reached

    def forget_order(self) -> None:
        """The broker may have lost events: let go of what waits for them, and start every
        stream's order again from its next event."""
        with self._fanning:
            self._fan_out(self.order.forget())

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closed:
            self._flusher = threading.Thread(
                target=self._flush, name="tidings-order", daemon=True
            )
            self._flusher.start()

    def _flush(self) -> None:
        """Let held events go at their deadline when no later dispatch comes to do it."""
        with self._fanning:
            while not self._closed:
                due_at = self.order.next_due()
                self._fanning.wait(None if due_at is None else max(0.0, due_at - time.monotonic()))
                try:
                    due = self.order.due(time.monotonic())
                    if due:
                        self._fan_out(due)
                except Exception:
                    log.exception("realtime: letting held events go failed")

    def close(self) -> None:
        """Stop the flusher, letting go of whatever is held."""
        with self._fanning:
            self._closed = True
            self._fan_out(self.order.forget())
            self._fanning.notify_all()

    def user_connections(self, user_id: str) -> list[Connection]:
        with self._lock:
            return list(self._users.get(user_id, ()))

    def connections(self) -> list[Connection]:
        with self._lock:
            return [conn for conns in self._users.values() for conn in conns]

    def followers(self, stream: str) -> tuple[Connection, ...]:
        """This worker's followers of one stream. Not ``followed_streams().get(stream)``: the
        ops dashboard asks for its own stream every second, and copying every stream's
        followers for that cost 4% of a worker's time while 5,000 sockets reconnected."""
        with self._lock:
            return tuple(self._streams.get(stream, ()))

    def followed_streams(self) -> dict[str, list[Connection]]:
        with self._lock:
            return {name: list(conns) for name, conns in self._streams.items()}

    def users_online(self) -> list[str]:
        with self._lock:
            return list(self._users)

    def count(self) -> int:
        with self._lock:
            return sum(len(conns) for conns in self._users.values())
