"""Socket commands: mark notifications read, dismiss a banner, acknowledge a live announcement.

Clients are hostile: every field is checked, and a user can only touch their own rows. There is
deliberately no command to publish an announcement: that is an admin page and a CLI command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.extensions import db, realtime
from app.models import User
from app.notifications import announcements, service
from flask_tidings import Connection, RealtimeError

#: At most this many ids per mark-read command.
MAX_IDS = 200


def _user(conn: Connection) -> User:
    user = db.session.get(User, int(conn.identity.user_id))
    if user is None or not user.active:
        raise RealtimeError("forbidden", "Your account is not active.")
    return user


@realtime.on("notifications.mark_read")
def mark_read(conn: Connection, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RealtimeError("bad_message", 'Send {"ids": [...]} or {"all": true}.')
    user = _user(conn)
    if data.get("all") is True:
        changed = service.mark_all_read(user)
        return {"all": True, "changed": changed, "unread": 0}
    ids = data.get("ids")
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise RealtimeError("bad_message", f'"ids" is a list of 1 to {MAX_IDS} integers.')
    try:
        changed_ids = service.mark_read(user, ids)
    except service.NotFound:
        raise RealtimeError("not_found", "No such notification.") from None
    return {"ids": changed_ids, "unread": service.unread_count(user)}


def _on_announcement(conn: Connection, data: Any, action: Callable[[Any, int], Any]) -> int:
    """Validate ``{"id": n}`` and run ``action(user, n)``; unknown or invisible ids: not_found."""
    value = data.get("id") if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RealtimeError("bad_message", '"id" is an announcement id.')
    try:
        action(_user(conn), value)
    except service.NotFound:
        raise RealtimeError("not_found", "No such announcement.") from None
    return value


@realtime.on("announcement.dismiss")
def dismiss(conn: Connection, data: Any) -> dict[str, Any]:
    return {"id": _on_announcement(conn, data, announcements.dismiss), "dismissed": True}


@realtime.on("announcement.seen")
def seen(conn: Connection, data: Any) -> dict[str, Any]:
    return {"id": _on_announcement(conn, data, announcements.record_seen), "seen": True}
