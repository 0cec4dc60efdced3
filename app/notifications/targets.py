"""Read once, everywhere: seeing what a notification points at marks it read.

Two ways in, both ending in :func:`service.mark_read_for_target`: a page load of the very path
a notification links to (clicked in the bell, a toast, an e-mail or typed by hand), and the
chat's ``room_read`` signal, sent when the person reads a room in the chat panel without any
page load. Either way every tab hears one ``notification.read`` event, and only if something
was still unread.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, has_app_context, request
from flask_login import current_user

from app.chat.signals import room_read
from app.errors import wants_json
from app.extensions import db
from app.notifications import bp, service

log = logging.getLogger("tidings.notifications")

#: Endpoints whose requests are never "opening a target": files, sockets.
_SKIPPED_BLUEPRINTS = ("realtime",)


def room_path(room_id: int) -> str:
    """Where the chat links a room (``app/chat/service.py`` builds notification links so)."""
    return f"/chat/{int(room_id)}"


@bp.before_app_request
def mark_opened_target_read() -> None:
    """Before the page renders, so its bell and lists already show the notification read."""
    if request.method != "GET" or request.endpoint in (None, "static"):
        return
    if request.blueprint in _SKIPPED_BLUEPRINTS or wants_json():
        return
    if not current_user.is_authenticated:
        return
    paths = [request.path]
    if request.query_string:
        paths.append(request.full_path)
    service.mark_read_for_target(current_user, paths)


def _mark_room_read(user_id: int, room_id: int) -> None:
    try:
        service.mark_read_for_target(int(user_id), [room_path(room_id)])
    except Exception:
        # Reading the room has happened already; a failed bell update must not undo it.
        db.session.rollback()
        log.exception("could not mark notifications of room %s read for user %s",
                      room_id, user_id)


@room_read.connect
def on_room_read(sender: Any, user_id: int, room_id: int, **_: Any) -> None:
    """The chat says ``user_id`` has read ``room_id`` (panel, page or socket command)."""
    if has_app_context() or not isinstance(sender, Flask):
        _mark_room_read(user_id, room_id)
        return
    with sender.app_context():
        _mark_room_read(user_id, room_id)
