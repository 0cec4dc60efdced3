"""Chat pages: the room list, one room with its recent history, older history as JSON, the
Browse page, and the forms that create, join and archive rooms, open DMs, post, edit and delete
messages without JavaScript."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.chat import bp, service
from app.chat.models import Room
from app.chat.service import PAGE_SIZE, ChatError
from app.errors import wants_json
from app.idempotency import HEADER, request_key

#: HTTP status for each refusal code (anything else is a 400).
STATUS = {"forbidden": 403, "not_found": 404, "rate_limited": 429, "archived": 409,
          "gone": 410}


def _readable_or_404(room_id: int) -> Room:
    # Unknown and forbidden rooms answer the same 404, so room ids reveal nothing.
    try:
        return service.readable_room(room_id, current_user.id)
    except ChatError:
        abort(404, "No such room, or you are not a member.")


def _number_arg(name: str, default: int | None = None) -> int | None:
    """A positive integer query argument; anything else (``abc``, ``-1``, 20 digits) is a 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    number = service.parse_id(raw)
    if number is None:
        abort(400, f"{name} must be a positive integer.")
    return number


def _refused(exc: ChatError, back: str):
    """A refusal: JSON with the status and code for scripts, a flash and a redirect for forms."""
    status = STATUS.get(exc.code, 400)
    if wants_json():
        response = jsonify({"error": {"code": exc.code, "message": exc.message}})
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, status
    flash(exc.message, "error")
    return redirect(back)


@bp.app_context_processor
def panel_helpers() -> dict[str, Any]:
    """``chat_panel_rooms()`` for the panel on every page; computed only when it renders."""

    def chat_panel_rooms() -> dict[str, Any]:
        if not current_user.is_authenticated:
            return {"joined": [], "recent": [], "hidden": 0}
        return service.rooms_for(current_user.id)

    return {"chat_panel_rooms": chat_panel_rooms}


@bp.route("/")
@login_required
def index():
    return render_template("chat/room.html", rooms=service.rooms_for(current_user.id), room=None)


@bp.route("/browse")
@login_required
def browse():
    """Every public room, a page at a time, newest first; ``?q=`` filters by name."""
    page = _number_arg("page", 1)
    found = service.browse(current_user.id, page or 1, request.args.get("q", ""))
    return render_template("chat/browse.html", found=found)


@bp.route("/<int:room_id>")
@login_required
def room(room_id: int):
    """Read a room. Looking is not joining: a public room shows its history and a Join button
    (GET changes nothing but the reader's own read position)."""
    room = _readable_or_404(room_id)
    member = service.membership(room.id, current_user.id)
    last_read = member.last_read_message_id if member else None
    head = service.room_head(room.id)  # before the history: see service.room_head
    messages = service.history(room.id)
    if member is not None:
        service.mark_read(room, current_user.id)
    return render_template(
        "chat/room.html",
        rooms=service.rooms_for(current_user.id),
        room=room,
        title=service.room_title(room, current_user.id),
        head=head,
        messages=service.serialize(messages),
        has_more=len(messages) == PAGE_SIZE,
        member=member is not None,
        last_read=last_read,
    )


@bp.route("/<int:room_id>/messages")
@login_required
def messages(room_id: int):
    """``?before=<message id>&limit=50``: older history, oldest first, each message once."""
    room = _readable_or_404(room_id)
    before = _number_arg("before")
    limit = min(_number_arg("limit", PAGE_SIZE) or PAGE_SIZE, PAGE_SIZE)
    member = service.membership(room.id, current_user.id)
    head = service.room_head(room.id)
    rows = service.history(room.id, before=before, limit=limit)
    return jsonify({
        "room": {"id": room.id, "kind": room.kind,
                 "title": service.room_title(room, current_user.id),
                 "archived": room.archived_at is not None,
                 "member": member is not None,
                 "last_read": member.last_read_message_id if member else None},
        "head": head,
        "messages": service.serialize(rows),
        "has_more": len(rows) == limit,
    })


@bp.route("/<int:room_id>/members")
@login_required
def members(room_id: int):
    """``?q=al``: members whose name starts with it, for @-autocomplete."""
    room = _readable_or_404(room_id)
    return jsonify({"members": service.members_matching(room, request.args.get("q", ""),
                                                        current_user.id)})


@bp.route("/<int:room_id>/messages", methods=["POST"])
@login_required
def post(room_id: int):
    """Post without JavaScript (the page's form falls back to this)."""
    back = url_for("chat.room", room_id=room_id)
    try:
        # The no-JS form's hidden client_id, or a script's Idempotency-Key: a resend with it
        # answers with the first message instead of posting a second.
        client_id = request.form.get("client_id") or request.headers.get(HEADER) or None
        data = service.post_message(current_user.id, room_id, request.form.get("body", ""),
                                    client_id)
    except ChatError as exc:
        if exc.code == "forbidden":
            abort(404, exc.message)
        return _refused(exc, back)
    if wants_json():
        return jsonify({"message": data})
    return redirect(back)


@bp.route("/<int:room_id>/join", methods=["POST"])
@login_required
def join(room_id: int):
    room = _readable_or_404(room_id)
    back = url_for("chat.room", room_id=room.id)
    try:
        service.join(room, current_user.id)
    except ChatError as exc:
        return _refused(exc, back)
    if wants_json():
        return jsonify({"joined": room.id})
    return redirect(back)


@bp.route("/<int:room_id>/archive", methods=["POST"])
@login_required
def archive(room_id: int):
    """Admins: ``archived=1`` archives the room, ``archived=0`` brings it back."""
    if not current_user.is_admin:
        abort(403, "Only admins can archive rooms.")
    room = _readable_or_404(room_id)
    archived = request.form.get("archived", "1") != "0"
    back = url_for("chat.room", room_id=room.id)
    try:
        service.archive_room(current_user, room, archived)
    except ChatError as exc:
        return _refused(exc, back)
    if wants_json():
        return jsonify({"room": room.id, "archived": archived})
    flash("Room archived: its history is read-only." if archived else "Room restored.",
          "success")
    return redirect(back)


@bp.route("/rooms", methods=["POST"])
@login_required
def create_room():
    try:
        room = service.create_room(current_user, request.form.get("name", ""),
                                   request.form.get("kind", "public"),
                                   request.form.get("invite", ""), key=request_key("room"))
    except ChatError as exc:
        return _refused(exc, url_for("chat.index"))
    return redirect(url_for("chat.room", room_id=room.id))


@bp.route("/dm", methods=["POST"])
@login_required
def open_dm():
    try:
        room = service.open_dm(current_user, request.form.get("username", ""))
    except ChatError as exc:
        return _refused(exc, url_for("chat.index"))
    return redirect(url_for("chat.room", room_id=room.id))


@bp.route("/messages/<int:message_id>/edit", methods=["POST"])
@login_required
def edit_message(message_id: int):
    try:
        data = service.edit_message(current_user, message_id, request.form.get("body", ""))
    except ChatError as exc:
        if exc.code in ("bad_message", "forbidden"):
            abort(404 if exc.code == "bad_message" else 403, exc.message)
        return _refused(exc, url_for("chat.index"))
    if wants_json():
        return jsonify({"message": data})
    return redirect(url_for("chat.room", room_id=data["room"]))


@bp.route("/messages/<int:message_id>/delete", methods=["POST"])
@login_required
def delete_message(message_id: int):
    try:
        message = service.delete_message(current_user, message_id)
    except ChatError as exc:
        abort(STATUS.get(exc.code, 404), exc.message)
    if wants_json():
        return jsonify({"deleted": message.id})
    return redirect(url_for("chat.room", room_id=message.room_id))
