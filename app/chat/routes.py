"""Chat pages: the room list, one room with its recent history, older history as JSON, and the
forms that create rooms, open DMs, post without JavaScript and delete messages."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.chat import bp, service
from app.chat.service import PAGE_SIZE, ChatError
from app.errors import wants_json


def _readable_or_404(room_id: int):
    # Unknown and forbidden rooms answer the same 404, so room ids reveal nothing.
    try:
        return service.readable_room(room_id, current_user.id)
    except ChatError:
        abort(404, "No such room, or you are not a member.")


@bp.app_context_processor
def panel_helpers() -> dict[str, Any]:
    """``chat_panel_rooms()`` for the panel on every page; computed only when it renders."""

    def chat_panel_rooms() -> list[dict[str, Any]]:
        if not current_user.is_authenticated:
            return []
        return service.rooms_for(current_user.id)

    return {"chat_panel_rooms": chat_panel_rooms}


@bp.route("/")
@login_required
def index():
    return render_template("chat/room.html", rooms=service.rooms_for(current_user.id), room=None)


@bp.route("/<int:room_id>")
@login_required
def room(room_id: int):
    room = _readable_or_404(room_id)
    if room.kind == "public":
        service.join(room, current_user.id)  # opening a public room joins it
    head = service.room_head(room.id)  # before the history: see service.room_head
    messages = service.history(room.id)
    if messages:
        service.mark_read(room, current_user.id, messages[-1].id)
    return render_template(
        "chat/room.html",
        rooms=service.rooms_for(current_user.id),
        room=room,
        title=service.room_title(room, current_user.id),
        head=head,
        messages=service.serialize(messages),
        has_more=len(messages) == PAGE_SIZE,
    )


@bp.route("/<int:room_id>/messages")
@login_required
def messages(room_id: int):
    """``?before=<message id>&limit=50``: older history, oldest first, each message once."""
    room = _readable_or_404(room_id)
    before = request.args.get("before", type=int)
    limit = request.args.get("limit", default=PAGE_SIZE, type=int) or PAGE_SIZE
    if (before is not None and before < 1) or limit < 1:
        abort(400, "before and limit are positive integers.")
    head = service.room_head(room.id)
    rows = service.history(room.id, before=before, limit=limit)
    return jsonify({
        "room": {"id": room.id, "kind": room.kind,
                 "title": service.room_title(room, current_user.id)},
        "head": head,
        "messages": service.serialize(rows),
        "has_more": len(rows) == min(limit, PAGE_SIZE),
    })


@bp.route("/<int:room_id>/messages", methods=["POST"])
@login_required
def post(room_id: int):
    """Post without JavaScript (the page's form falls back to this)."""
    try:
        data = service.post_message(current_user.id, room_id, request.form.get("body", ""))
    except ChatError as exc:
        if exc.code == "forbidden":
            abort(404, exc.message)
        if wants_json():
            return jsonify({"error": {"code": exc.code, "message": exc.message}}), 400
        flash(exc.message, "error")
        return redirect(url_for("chat.room", room_id=room_id))
    if wants_json():
        return jsonify({"message": data})
    return redirect(url_for("chat.room", room_id=room_id))


@bp.route("/rooms", methods=["POST"])
@login_required
def create_room():
    try:
        room = service.create_room(current_user, request.form.get("name", ""),
                                   request.form.get("kind", "public"),
                                   request.form.get("invite", ""))
    except ChatError as exc:
        flash(exc.message, "error")
        return redirect(url_for("chat.index"))
    return redirect(url_for("chat.room", room_id=room.id))


@bp.route("/dm", methods=["POST"])
@login_required
def open_dm():
    try:
        room = service.open_dm(current_user, request.form.get("username", ""))
    except ChatError as exc:
        flash(exc.message, "error")
        return redirect(url_for("chat.index"))
    return redirect(url_for("chat.room", room_id=room.id))


@bp.route("/messages/<int:message_id>/delete", methods=["POST"])
@login_required
def delete_message(message_id: int):
    try:
        message = service.delete_message(current_user, message_id)
    except ChatError as exc:
        abort(403 if exc.code == "forbidden" else 404, exc.message)
    if wants_json():
        return jsonify({"deleted": message.id})
    return redirect(url_for("chat.room", room_id=message.room_id))
