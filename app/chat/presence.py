"""Who is online in a room, correct across gunicorn workers and hosts.

Each worker knows only its own sockets, so presence lives in a shared store: a Redis sorted set
per room (member ``"<user_id>:<conn_id>"``, score = expiry time) when ``REDIS_URL`` is set, else
the ``chat_presence`` table with the same meaning. A daemon thread in every worker re-stamps its
own sockets' entries every few seconds; readers ignore (and sweep) expired entries. A worker that
is SIGKILLed stops re-stamping, so its users drop out within ``CHAT_PRESENCE_TTL`` seconds
without anybody having to notice the crash.

What a socket is "in" is derived from the streams it follows (``room:<id>``), the same truth the
authorizer guards, so a subscribe or unsubscribe shows up at the next tick at the latest; the
``chat.presence`` command syncs a socket at once so the page sees itself immediately.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from flask import Flask, current_app
from sqlalchemy import delete, select

from app.chat.models import Presence
from app.extensions import db, realtime
from app.models import User

log = logging.getLogger("tidings.chat")

#: Seconds an entry lives without a refresh (``CHAT_PRESENCE_TTL``).
DEFAULT_TTL = 15.0


def presence_ttl(app: Flask | None = None) -> float:
    app = app or current_app
    value = app.config.get("CHAT_PRESENCE_TTL") or os.environ.get("CHAT_PRESENCE_TTL")
    try:
        return max(0.5, float(value)) if value else DEFAULT_TTL
    except ValueError:
        return DEFAULT_TTL


# ------------------------------------------------------------------------------------- backends


class RedisPresence:
    """One sorted set per room; the key prefix follows the realtime channel so sites (and test
    servers) sharing one Redis do not see each other's users."""

    def __init__(self, url: str, prefix: str):
        import redis

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def _key(self, room_id: int) -> str:
        return f"{self.prefix}:chat:presence:{room_id}"

    def touch(self, entries: list[tuple[int, int, str]], expires: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for room_id, user_id, conn_id in entries:
            pipe.zadd(self._key(room_id), {f"{user_id}:{conn_id}": expires})
            # The whole set expires too, so an abandoned room leaves nothing behind.
            pipe.expire(self._key(room_id), int(expires - time.time()) + 60)
        pipe.execute()

    def remove(self, entries: list[tuple[int, int, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for room_id, user_id, conn_id in entries:
            pipe.zrem(self._key(room_id), f"{user_id}:{conn_id}")
        pipe.execute()

    def online(self, room_id: int) -> set[int]:
        key = self._key(room_id)
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zrangebyscore(key, now, "+inf")
        _, members = pipe.execute()
        return {int(m.decode().split(":", 1)[0]) for m in members}


class DatabasePresence:
    """The same scheme in the ``chat_presence`` table (no Redis): one row per (room, socket)."""

    def touch(self, entries: list[tuple[int, int, str]], expires: float) -> None:
        for room_id, user_id, conn_id in entries:
            row = db.session.scalar(select(Presence).where(
                Presence.room_id == room_id, Presence.conn_id == conn_id))
            if row is None:
                db.session.add(Presence(room_id=room_id, user_id=user_id, conn_id=conn_id,
                                        expires_at=expires))
            else:
                row.expires_at = expires
        db.session.commit()

    def remove(self, entries: list[tuple[int, int, str]]) -> None:
        for room_id, _user_id, conn_id in entries:
            db.session.execute(delete(Presence).where(
                Presence.room_id == room_id, Presence.conn_id == conn_id))
        db.session.commit()

    def online(self, room_id: int) -> set[int]:
        now = time.time()
        db.session.execute(delete(Presence).where(
            Presence.room_id == room_id, Presence.expires_at <= now))
        db.session.commit()
        return set(db.session.scalars(select(Presence.user_id).where(
            Presence.room_id == room_id, Presence.expires_at > now)))


def backend(app: Flask | None = None) -> RedisPresence | DatabasePresence:
    app = app or current_app
    cached = app.extensions.get("chat_presence")
    if cached is None:
        url = app.config.get("REDIS_URL")
        if url:
            # Keys named after the site, so two sites sharing one Redis keep apart.
            cached = RedisPresence(url, f"tidings-{realtime.site_id}")
        else:
            cached = DatabasePresence()
        app.extensions["chat_presence"] = cached
    return cached


# ------------------------------------------------------------------------------------- tracking


def room_ids_of(conn: Any) -> set[int]:
    """Rooms a socket follows right now (its ``room:<id>`` subscriptions)."""
    rooms = set()
    for stream in conn.followed:
        prefix, _, rest = stream.partition(":")
        if prefix == "room" and rest.isdigit():
            rooms.add(int(rest))
    return rooms


class Tracker:
    """This worker's view: which of its sockets are in which rooms, and the last list it saw
    per room (to emit ``chat.presence`` only on a change)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.registered: dict[str, tuple[int, set[int]]] = {}  # conn id -> (user id, rooms)
        self.last_seen: dict[int, list[dict[str, Any]]] = {}
        self.thread: threading.Thread | None = None


_trackers: dict[int, Tracker] = {}
_trackers_lock = threading.Lock()


def tracker(app: Flask) -> Tracker:
    """This process's tracker for ``app`` (a fresh one after a fork: the parent's threads and
    sockets did not come along)."""
    with _trackers_lock:
        found = _trackers.get(id(app))
        if found is None or found.pid != os.getpid():
            found = _trackers[id(app)] = Tracker()
        return found


def online_list(room_id: int, app: Flask | None = None) -> list[dict[str, Any]]:
    """Users online in a room, by name, from the shared store."""
    ids = backend(app).online(room_id)
    if not ids:
        return []
    rows = db.session.execute(
        select(User.id, User.username).where(User.id.in_(ids)).order_by(User.username)
    ).all()
    return [{"id": uid, "name": name} for uid, name in rows]


def _publish_if_changed(room_id: int, track: Tracker, force: bool = False) -> list[dict[str, Any]]:
    online = online_list(room_id)
    with track.lock:
        changed = force or track.last_seen.get(room_id) != online
        track.last_seen[room_id] = online
    if changed:
        realtime.emit(f"room:{room_id}", "chat.presence", {"room": room_id, "online": online})
    return online


def sync(conn: Any, app: Flask | None = None, closed: bool = False) -> set[int]:
    """Bring the shared store in line with one socket; returns the rooms whose list changed.

    Called by the refresher, by the ``chat.presence`` command and on disconnect (``closed``).
    """
    app = app or current_app._get_current_object()
    track = tracker(app)
    user_id = int(conn.identity.user_id)
    now_rooms = set() if closed else room_ids_of(conn)
    with track.lock:
        _, before = track.registered.get(conn.id, (user_id, set()))
        if closed:
            track.registered.pop(conn.id, None)
        else:
            track.registered[conn.id] = (user_id, now_rooms)
    store = backend(app)
    gone = before - now_rooms
    if gone:
        store.remove([(r, user_id, conn.id) for r in gone])
    if now_rooms:
        store.touch([(r, user_id, conn.id) for r in now_rooms], time.time() + presence_ttl(app))
    return gone | (now_rooms - before)


def announce(rooms: set[int], app: Flask | None = None) -> None:
    app = app or current_app._get_current_object()
    track = tracker(app)
    for room_id in rooms:
        _publish_if_changed(room_id, track)


def ensure_refresher(app: Flask) -> None:
    """Start this worker's refresher thread once (per process, after gunicorn's fork)."""
    track = tracker(app)
    with track.lock:
        if track.thread is not None:
            return
        track.thread = threading.Thread(target=_refresh_forever, args=(app, track),
                                        name="tidings-chat-presence", daemon=True)
        track.thread.start()


def _refresh_forever(app: Flask, track: Tracker) -> None:
    # A third of the TTL: an entry survives two missed refreshes before it expires.
    interval = min(5.0, presence_ttl(app) / 3)
    while True:
        time.sleep(interval)
        try:
            with app.app_context():
                refresh_once(app, track)
        except Exception:
            log.exception("chat presence refresh failed")
        finally:
            try:
                with app.app_context():
                    db.session.remove()
            except Exception:
                pass


def refresh_once(app: Flask, track: Tracker) -> None:
    """Re-stamp every local socket, then re-read each room this worker's sockets follow and
    announce any change (including users of a dead worker expiring)."""
    live = {conn.id: conn for conn in realtime.connections()}
    changed: set[int] = set()
    for conn in live.values():
        changed |= sync(conn, app)
    with track.lock:
        stale = [cid for cid in track.registered if cid not in live]
    for cid in stale:
        # A socket that vanished without its disconnect hook running (should not happen).
        user_id, rooms = track.registered.pop(cid)
        backend(app).remove([(r, user_id, cid) for r in rooms])
        changed |= rooms
    with track.lock:
        watched = {r for _, rooms in track.registered.values() for r in rooms}
        for room_id in list(track.last_seen):
            if room_id not in watched:
                track.last_seen.pop(room_id, None)
    for room_id in watched | changed:
        _publish_if_changed(room_id, track)
