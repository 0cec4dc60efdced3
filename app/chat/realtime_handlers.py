"""Socket side of chat: who may follow ``room:<id>``, and the ``chat.*`` commands.

Every handler re-checks membership from the database: a frame is a claim, never a proof, and a
user removed from a room must not keep posting from an old tab.

Commands: ``chat.send`` ``{room, body, client_id?}``, ``chat.edit`` ``{message, body}``,
``chat.delete`` ``{message}``, ``chat.read`` ``{room, message}``, ``chat.typing`` ``{room}``,
``chat.presence`` ``{room}``. Events on ``room:<id>``: ``chat.message``, ``chat.edited`` (the
whole message), ``chat.deleted`` ``{message, room}``, ``chat.archived`` ``{room, archived}``,
and the ephemeral ``chat.typing`` and ``chat.presence``. Events on the user's own stream:
``chat.room`` (a room they were added to: ``{room: {id, kind, title, url, messages_url}, head,
through, unread}``) and ``chat.read`` (``{room, last_read, unread, through}`` after any of
their tabs read a room; ``through`` is the newest message id the count covers).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.chat import presence, service
from app.chat.service import ChatError
from app.extensions import db, realtime
from app.models import User
from flask_tidings import Connection, Identity, RealtimeError


@realtime.authorizer("room")
def can_follow_room(identity: Identity, room_id: str) -> bool:
    """Public rooms: every logged-in user (to read before joining). Private rooms and DMs:
    members only. Checked on every subscribe, in every worker."""
    return service.can_read(service.get_room(room_id), int(identity.user_id))


def _data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RealtimeError("bad_message", '"data" must be an object.')
    return data


def _user_id(conn: Connection) -> int:
    return int(conn.identity.user_id)


def _room(conn: Connection, data: dict[str, Any]) -> Any:
    room_id = data.get("room")
    if isinstance(room_id, bool) or not isinstance(room_id, int):
        raise RealtimeError("bad_message", '"room" must be a room id (an integer).')
    try:
        return service.readable_room(room_id, _user_id(conn))
    except ChatError as exc:
        raise RealtimeError(exc.code, exc.message) from None


@realtime.on("chat.send")
def send(conn: Connection, data: Any) -> dict[str, Any]:
    """``{"room": 3, "body": "hi", "client_id": "c1"}`` → ``{"message": {...}}``.

    ``client_id`` is the page's id for its pending copy (a short token, see
    ``service.CLIENT_ID``); sending the same one again answers with the first message.
    """
    data = _data(data)
    room = _room(conn, data)
    try:
        message = service.post_message(_user_id(conn), room.id, data.get("body"),
                                       data.get("client_id"))
    except ChatError as exc:
        raise RealtimeError(exc.code, exc.message) from None
    return {"message": message}


@realtime.on("chat.typing")
def typing(conn: Connection, data: Any) -> dict[str, Any]:
    """Tell the room someone is typing. Ephemeral: the client hides it after a few seconds
    without a new one (``expires_in``), so nobody needs to send "stopped typing"."""
    room = _room(conn, _data(data))
    realtime.emit(room.stream, "chat.typing", {
        "room": room.id, "user": _user_id(conn), "name": conn.identity.name, "expires_in": 4,
    })
    return {"ok": True}


@realtime.on("chat.presence")
def who_is_here(conn: Connection, data: Any) -> dict[str, Any]:
    """Sync this socket's rooms into the shared store now and answer the room's online list."""
    room = _room(conn, _data(data))
    app = current_app._get_current_object()
    presence.ensure_refresher(app)
    changed = presence.sync(conn, app)
    presence.announce(changed - {room.id}, app)
    online = presence._publish_if_changed(room.id, presence.tracker(app))
    return {"room": room.id, "online": online}


@realtime.on("chat.read")
def read(conn: Connection, data: Any) -> dict[str, Any]:
    """The page saw messages up to ``message``: move the read position (unread counts, the
    user's other tabs, and the notifications about this room)."""
    data = _data(data)
    room = _room(conn, data)
    message_id = data.get("message")
    if isinstance(message_id, bool) or not isinstance(message_id, int) or (
        message_id != 0 and service.parse_id(message_id) is None
    ):
        raise RealtimeError("bad_message", '"message" must be a message id.')
    service.mark_read(room, _user_id(conn), message_id)
    return {"ok": True}


def _actor(conn: Connection) -> User:
    actor = db.session.get(User, _user_id(conn))
    if actor is None:
        raise RealtimeError("forbidden", "Log in again.")
    return actor


@realtime.on("chat.edit")
def edit(conn: Connection, data: Any) -> dict[str, Any]:
    """The author: ``{"message": 812, "body": "new text"}``; every open page shows the change."""
    data = _data(data)
    try:
        message = service.edit_message(_actor(conn), data.get("message"), data.get("body"))
    except ChatError as exc:
        raise RealtimeError(exc.code, exc.message) from None
    return {"message": message}


@realtime.on("chat.delete")
def delete(conn: Connection, data: Any) -> dict[str, Any]:
    """The author or an admin: ``{"message": 812}`` leaves a tombstone for everyone, live and
    in history."""
    data = _data(data)
    try:
        message = service.delete_message(_actor(conn), data.get("message"))
    except ChatError as exc:
        raise RealtimeError(exc.code, exc.message) from None
    return {"deleted": message.id}


@realtime.on_connect
def start_refresher(conn: Connection) -> None:
    presence.ensure_refresher(current_app._get_current_object())


@realtime.on_disconnect
def leave_rooms(conn: Connection) -> None:
    """A closed socket leaves every room at once (a killed worker's expire instead)."""
    app = current_app._get_current_object()
    changed = presence.sync(conn, app, closed=True)
    presence.announce(changed, app)
