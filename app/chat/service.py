"""Chat rules in one place: who may read and post, storing messages, history pages, unread counts.

Views and socket handlers both call these functions, so a rule (membership, limits) cannot be
enforced on one path and forgotten on the other.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from app.chat.models import Message, Room, RoomMember
from app.extensions import db, realtime
from app.models import User, utcnow

log = logging.getLogger("tidings.chat")

#: Longest message body, in characters after stripping whitespace.
MAX_BODY = 2000
#: Messages shown when a room opens, and the largest page the history endpoint returns.
PAGE_SIZE = 50
#: Default send rate: at most this many messages per user ...
RATE_COUNT = 5
#: ... within this many seconds (counted in the database, so it holds across workers).
RATE_WINDOW = 5.0
#: Longest room name.
MAX_ROOM_NAME = 64

_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,64})")


class ChatError(Exception):
    """A refused chat action; ``code`` is what the socket's error frame carries."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def setting(name: str, default: float) -> float:
    """A ``CHAT_*`` setting: app config first, then the environment (the live test server sets
    ``CHAT_PRESENCE_TTL`` there; app/config.py only parses ``REALTIME_*`` variables)."""
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------- access


def get_room(room_id: Any) -> Room | None:
    """The room for an id from a URL or a frame; ``None`` for anything that is not a room id."""
    if isinstance(room_id, bool):
        return None
    try:
        number = int(room_id)
    except (TypeError, ValueError):
        return None
    if not 0 < number < 2**31:
        return None
    return db.session.get(Room, number)


def membership(room_id: int, user_id: int) -> RoomMember | None:
    return db.session.scalar(
        select(RoomMember).where(RoomMember.room_id == room_id, RoomMember.user_id == user_id)
    )


def can_read(room: Room | None, user_id: int) -> bool:
    """Public rooms are readable (and followable) by every logged-in user, so people can look
    before joining; private rooms and DMs only by their members."""
    if room is None:
        return False
    if room.kind == "public":
        return True
    return membership(room.id, user_id) is not None


def readable_room(room_id: Any, user_id: int) -> Room:
    """The room if ``user_id`` may read it; unknown and forbidden rooms look alike."""
    room = get_room(room_id)
    if not can_read(room, user_id):
        raise ChatError("forbidden", "No such room, or you are not a member.")
    assert room is not None
    return room


def join(room: Room, user_id: int) -> RoomMember:
    """Join a public room (idempotent). Private rooms and DMs are joined only by invitation."""
    member = membership(room.id, user_id)
    if member is not None:
        return member
    if room.kind != "public":
        raise ChatError("forbidden", "This room is for its members only.")
    member = RoomMember(room_id=room.id, user_id=user_id, last_read_message_id=_last_id(room.id))
    db.session.add(member)
    try:
        db.session.commit()
    except IntegrityError:
        # Another tab joined at the same moment; its row is as good as ours.
        db.session.rollback()
        member = membership(room.id, user_id)
        assert member is not None
    return member


def _last_id(room_id: int) -> int:
    return db.session.scalar(
        select(func.max(Message.id)).where(Message.room_id == room_id)
    ) or 0


# ---------------------------------------------------------------------------------------- rooms


def create_room(creator: User, name: str, kind: str, invite: str = "") -> Room:
    """Create a public or private room; ``invite`` is a comma/space separated list of usernames.

    :raises ChatError: for a bad name or kind, or an unknown invited username.
    """
    name = (name or "").strip().lstrip("#")
    if not name or len(name) > MAX_ROOM_NAME:
        raise ChatError("bad_name", f"A room name has 1 to {MAX_ROOM_NAME} characters.")
    if kind not in ("public", "private"):
        raise ChatError("bad_kind", "A room is public or private.")
    usernames = {u for u in re.split(r"[\s,]+", invite or "") if u} - {creator.username}
    invited = list(db.session.scalars(select(User).where(User.username.in_(usernames))))
    missing = usernames - {u.username for u in invited}
    if missing:
        raise ChatError("unknown_user", "No such user: " + ", ".join(sorted(missing)))
    room = Room(name=name, kind=kind, created_by=creator.id)
    db.session.add(room)
    db.session.flush()
    for user_id in {creator.id, *(u.id for u in invited)}:
        db.session.add(RoomMember(room_id=room.id, user_id=user_id))
    db.session.commit()
    return room


def open_dm(user: User, other_username: str) -> Room:
    """The one DM room between two users, created on first use."""
    other = db.session.scalar(select(User).where(User.username == (other_username or "").strip()))
    if other is None or not other.active:
        raise ChatError("unknown_user", "No such user.")
    if other.id == user.id:
        raise ChatError("bad_target", "Pick someone other than yourself.")
    low, high = sorted((user.id, other.id))
    key = f"{low}:{high}"
    room = db.session.scalar(select(Room).where(Room.dm_key == key))
    if room is not None:
        return room
    room = Room(name=f"{user.username} & {other.username}", kind="dm", created_by=user.id,
                dm_key=key)
    db.session.add(room)
    try:
        db.session.flush()
        db.session.add_all([RoomMember(room_id=room.id, user_id=low),
                            RoomMember(room_id=room.id, user_id=high)])
        db.session.commit()
    except IntegrityError:
        # The other user opened the same DM at the same moment: use theirs.
        db.session.rollback()
        room = db.session.scalar(select(Room).where(Room.dm_key == key))
        assert room is not None
    return room


def room_title(room: Room, viewer_id: int) -> str:
    """What a viewer calls a room: ``#name``, or the other person's name for a DM."""
    if room.kind != "dm":
        return f"#{room.name}"
    other = db.session.scalar(
        select(User.username).join(RoomMember, RoomMember.user_id == User.id)
        .where(RoomMember.room_id == room.id, User.id != viewer_id)
    )
    return f"@{other}" if other else room.name


#: Most rooms whose unread badge a page keeps live (each is one followed stream on the socket).
MAX_LIVE_BADGES = 50


def rooms_for(user_id: int) -> list[dict[str, Any]]:
    """Rooms a user sees in the list: their rooms (with unread counts) and public rooms.

    Each of the user's own rooms (up to ``MAX_LIVE_BADGES``) also carries ``head``, its stream's
    last event id, so the page can follow it for a live badge without replaying old messages as
    new; ``None`` for the others. All heads come from one query, and they are read *before* the
    unread counts: a message landing in between is then counted and replayed (one too many)
    rather than missed by both.
    """
    rows = db.session.execute(
        select(Room, RoomMember)
        .outerjoin(RoomMember, and_(RoomMember.room_id == Room.id, RoomMember.user_id == user_id))
        .where(or_(Room.kind == "public", RoomMember.id.is_not(None)))
        .order_by(Room.kind != "public", Room.name, Room.id)
    ).all()
    live = [room.stream for room, member in rows if member is not None][:MAX_LIVE_BADGES]
    heads = current_app.extensions["realtime"].store.heads(live) if live else {}
    unread = unread_counts(user_id)
    return [
        {"room": room, "title": room_title(room, user_id), "member": member is not None,
         "unread": unread.get(room.id, 0),
         "head": heads.get(room.stream, 0) if room.stream in live else None}
        for room, member in rows
    ]


def unread_counts(user_id: int) -> dict[int, int]:
    """Visible messages after each of the user's read positions (their own excluded)."""
    rows = db.session.execute(
        select(RoomMember.room_id, func.count(Message.id))
        .join(Message, and_(Message.room_id == RoomMember.room_id,
                            Message.id > RoomMember.last_read_message_id))
        .where(RoomMember.user_id == user_id, Message.deleted_at.is_(None),
               or_(Message.user_id.is_(None), Message.user_id != user_id))
        .group_by(RoomMember.room_id)
    ).all()
    return {room_id: count for room_id, count in rows}


def mark_read(room: Room, user_id: int, message_id: int | None = None) -> None:
    """Move the read position forward (never back) to ``message_id`` or the newest message."""
    member = membership(room.id, user_id)
    if member is None:
        return
    target = _last_id(room.id) if message_id is None else min(int(message_id), _last_id(room.id))
    if target > (member.last_read_message_id or 0):
        member.last_read_message_id = target
        db.session.commit()


# ---------------------------------------------------------------------------------------- messages


def names_for(user_ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in user_ids if i is not None}
    if not ids:
        return {}
    return dict(db.session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def serialize(messages: list[Message]) -> list[dict[str, Any]]:
    names = names_for({m.user_id for m in messages})
    return [m.to_json(names.get(m.user_id or 0, "deleted user")) for m in messages]


def history(room_id: int, before: int | None = None, limit: int = PAGE_SIZE) -> list[Message]:
    """Up to ``limit`` visible messages older than ``before`` (a message id), oldest first.

    Keyset pagination on ``id``: each message appears in exactly one page however many
    messages arrive between requests, which offset pagination cannot promise.
    """
    limit = max(1, min(int(limit), PAGE_SIZE))
    query = select(Message).where(Message.room_id == room_id, Message.deleted_at.is_(None))
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(db.session.scalars(query.order_by(Message.id.desc()).limit(limit)))
    rows.reverse()
    return rows


def room_head(room_id: int) -> int:
    """The room stream's last event id, read *before* the history so nothing falls in between:
    a message stored after the history read is published after this head, so it is replayed;
    one already in the history may be replayed too, and the client drops it by message id."""
    return current_app.extensions["realtime"].store.head(f"room:{room_id}")


def clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ChatError("bad_message", '"body" must be a string.')
    body = body.strip()
    if not body:
        raise ChatError("empty", "Type a message first.")
    if len(body) > MAX_BODY:
        raise ChatError("too_long", f"A message has at most {MAX_BODY} characters.")
    return body


def _check_rate(user_id: int) -> None:
    count = int(setting("CHAT_RATE_COUNT", RATE_COUNT))
    window = setting("CHAT_RATE_WINDOW", RATE_WINDOW)
    since = utcnow() - timedelta(seconds=window)
    recent = db.session.scalar(
        select(func.count(Message.id)).where(Message.user_id == user_id, Message.created_at > since)
    ) or 0
    if recent >= count:
        raise ChatError("rate_limited",
                        f"Slow down: at most {count} messages every {window:g} seconds.")


def post_message(user_id: int, room_id: Any, body: Any, client_id: str | None = None
                 ) -> dict[str, Any]:
    """Store a message, then publish it on the room's stream and notify mentioned people.

    Posting to a public room joins it. :raises ChatError: forbidden, empty, too_long,
    rate_limited.
    """
    room = readable_room(room_id, user_id)
    text = clean_body(body)
    join(room, user_id)  # members only for private rooms and DMs (raises); joins public ones
    _check_rate(user_id)
    message = Message(room_id=room.id, user_id=user_id, body=text)
    db.session.add(message)
    db.session.commit()
    [data] = serialize([message])
    if client_id:
        data["client_id"] = client_id
    # Store first, push second: a follower that misses the push replays it from the log.
    realtime.publish(room.stream, "chat.message", data)
    mark_read(room, user_id, message.id)
    _notify(room, message, data["user"]["name"])
    return data


def _notify(room: Room, message: Message, sender: str) -> None:
    """A DM notifies the other person; an ``@name`` notifies that room member."""
    member_ids = set(db.session.scalars(
        select(RoomMember.user_id).where(RoomMember.room_id == room.id)
    ))
    link = f"/chat/{room.id}"
    targets: list[tuple[int, str, str]] = []
    if room.kind == "dm":
        targets += [(uid, "dm", f"Message from {sender}") for uid in member_ids
                    if uid != message.user_id]
    else:
        names = set(_MENTION.findall(message.body))
        if names:
            for uid, name in db.session.execute(
                select(User.id, User.username).where(User.username.in_(names))
            ).all():
                if uid in member_ids and uid != message.user_id:
                    targets.append((uid, "mention", f"{sender} mentioned you in #{room.name}"))
    if not targets:
        return
    try:
        from app.notifications.service import create_notification
    except ImportError:  # TODO(integration): notifications ship in issue 4
        log.warning("notifications unavailable; chat notifications skipped")
        return
    for uid, kind, title in targets:
        try:
            create_notification(uid, kind, title, message.body[:300], link)
        except Exception:
            # The message is stored and delivered; a failed notification must not undo that.
            db.session.rollback()
            log.exception("chat notification failed user=%s", uid)


def delete_message(actor: User, message_id: Any) -> Message:
    """An admin hides a message for everyone; the row stays, marked with who and when."""
    if not actor.is_admin:
        raise ChatError("forbidden", "Only admins can delete messages.")
    if isinstance(message_id, bool) or not isinstance(message_id, (int, str)):
        raise ChatError("bad_message", '"message" must be a message id.')
    try:
        number = int(message_id)
    except ValueError:
        raise ChatError("bad_message", '"message" must be a message id.') from None
    message = db.session.get(Message, number) if 0 < number < 2**31 else None
    if message is None:
        raise ChatError("not_found", "No such message.")
    if message.deleted_at is None:
        message.deleted_at = utcnow()
        message.deleted_by = actor.id
        db.session.commit()
        realtime.publish(f"room:{message.room_id}", "chat.deleted",
                         {"message": message.id, "room": message.room_id})
    return message
