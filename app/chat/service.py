"""Chat rules in one place: who may read and post, storing messages, history pages, unread counts,
limits, edits, archiving.

Views and socket handlers both call these functions, so a rule (membership, limits) cannot be
enforced on one path and forgotten on the other.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from typing import Any

from flask import current_app
from flask_tidings import user_stream
from sqlalchemy import and_, case, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from app.chat.models import Budget, Message, Room, RoomMember
from app.chat.signals import room_read
from app.errors import saved
from app.extensions import db, realtime
from app.models import User, utcnow

log = logging.getLogger("tidings.chat")

#: Longest message body, in characters (code points) after stripping whitespace.
MAX_BODY = 2000
#: Messages shown when a room opens, and the largest page the history endpoint returns.
PAGE_SIZE = 50
#: Send limit, a token bucket per user: a burst of this many messages (``CHAT_RATE_COUNT``) ...
RATE_COUNT = 10
#: ... refilled over this many seconds (``CHAT_RATE_WINDOW``): a person answering eight quick
#: one-liners goes through, a script pasting a hundred does not.
RATE_WINDOW = 20.0
#: Rooms a user may create per hour (``CHAT_ROOMS_PER_HOUR``); admins are not limited.
ROOMS_PER_HOUR = 5
#: New direct-message conversations a user may start per hour (``CHAT_DMS_PER_HOUR``).
DMS_PER_HOUR = 30
#: Longest room name.
MAX_ROOM_NAME = 64
#: A page lists at most this many of the user's rooms (the rest are one click away in Browse).
MAX_LISTED_ROOMS = 100
#: ... and this many of the newest public rooms they have not joined, whatever the site holds.
RECENT_PUBLIC_ROOMS = 5
#: Rooms per page of the Browse page.
BROWSE_PAGE_SIZE = 30
#: Most rooms whose unread badge a page keeps live (each is one followed stream on the socket).
MAX_LIVE_BADGES = 50
#: Names the @-autocomplete offers at once.
MEMBER_MATCHES = 8
#: Largest id any table here hands out (32-bit integer columns on PostgreSQL).
MAX_ID = 2**31 - 1

#: The page's own id for a pending message: short, and no ``__proto__``-style names (it starts
#: with a letter or digit), so no client can trip over it whatever it keys with it.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,64})")


class ChatError(Exception):
    """A refused chat action; ``code`` is what the socket's error frame carries.

    ``retry_after`` (seconds) is set when waiting is the remedy (a limit was reached).
    """

    def __init__(self, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


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


def parse_id(value: Any) -> int | None:
    """A row id from a URL, a form or a frame; ``None`` for anything else, including numbers no
    row can have (a 20-digit id must be a clear refusal, not an overflow in the driver)."""
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 12):
            return None
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= MAX_ID else None


def _read_signal(room_id: int, user_id: int) -> None:
    """Tell other areas (notifications) that the user has read this room. A failing subscriber
    must not undo the read, nor fail the page or the message that caused it."""
    try:
        room_read.send(current_app._get_current_object(), user_id=int(user_id),
                       room_id=int(room_id))
    except Exception:
        db.session.rollback()
        log.exception("chat.room-read subscriber failed user=%s room=%s", user_id, room_id)


# ---------------------------------------------------------------------------------------- access


def get_room(room_id: Any) -> Room | None:
    """The room for an id from a URL or a frame; ``None`` for anything that is not a room id."""
    number = parse_id(room_id)
    return None if number is None else db.session.get(Room, number)


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


def _refuse_archived(room: Room) -> None:
    if room.archived_at is not None:
        raise ChatError("archived", "This room is archived: its history is read-only.")


def join(room: Room, user_id: int) -> RoomMember:
    """Join a public room (idempotent). Private rooms and DMs are joined only by invitation.

    A new membership is announced on the user's own stream, so their other tabs list the room.
    """
    member = membership(room.id, user_id)
    if member is not None:
        return member
    if room.kind != "public":
        raise ChatError("forbidden", "This room is for its members only.")
    _refuse_archived(room)
    member = RoomMember(room_id=room.id, user_id=user_id, last_read_message_id=_last_id(room.id))
    db.session.add(member)
    try:
        db.session.commit()
    except IntegrityError:
        # Another tab joined at the same moment; its row is as good as ours (and announced it).
        db.session.rollback()
        member = membership(room.id, user_id)
        assert member is not None
        return member
    _announce_rooms(room, [user_id])
    return member


def _last_id(room_id: int) -> int:
    return db.session.scalar(
        select(func.max(Message.id)).where(Message.room_id == room_id)
    ) or 0


# ---------------------------------------------------------------------------------------- limits


def _insert_ignore(table: Any, values: dict[str, Any]) -> Any:
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    return None


def spend(user_id: int, action: str, capacity: float, per_seconds: float,
          now: float | None = None) -> float:
    """Take one token from the user's bucket for ``action``, in the caller's transaction.

    The bucket holds at most ``capacity`` tokens and refills ``capacity`` per ``per_seconds``.
    Returns 0.0 when a token was taken, else the seconds until one will be there. The take is a
    single conditional UPDATE (refill, test, decrement in one statement), so 16 simultaneous
    requests in several workers take at most the tokens there are: the database serializes the
    row, and each UPDATE re-reads it.
    """
    now = time.time() if now is None else now
    capacity = max(1.0, capacity)
    rate = capacity / max(per_seconds, 0.001)
    for _ in range(2):
        elapsed = case((literal(now) > Budget.updated_at, literal(now) - Budget.updated_at),
                       else_=literal(0.0))
        refilled = Budget.tokens + elapsed * rate
        current = case((refilled > capacity, literal(capacity)), else_=refilled)
        taken = db.session.execute(
            update(Budget)
            .where(Budget.user_id == user_id, Budget.action == action, current >= 1.0)
            .values(tokens=current - 1.0, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount:
            return 0.0
        row = db.session.execute(
            select(Budget.tokens, Budget.updated_at)
            .where(Budget.user_id == user_id, Budget.action == action)
        ).first()
        if row is not None:
            tokens = min(capacity, row.tokens + max(0.0, now - row.updated_at) * rate)
            return max(0.001, (1.0 - tokens) / rate)
        # First use: a full bucket (a concurrent first use inserts it too; either row will do).
        statement = _insert_ignore(Budget, {"user_id": user_id, "action": action,
                                            "tokens": capacity, "updated_at": now})
        if statement is not None:
            db.session.execute(statement)
        else:  # pragma: no cover - other databases
            db.session.add(Budget(user_id=user_id, action=action, tokens=capacity,
                                  updated_at=now))
            db.session.flush()
    return 1.0


def _wait_words(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}{'' if number == 1 else 's'}"


def _check_send_rate(user_id: int) -> None:
    count = max(1, int(setting("CHAT_RATE_COUNT", RATE_COUNT)))
    window = setting("CHAT_RATE_WINDOW", RATE_WINDOW)
    _spend_or_refuse(user_id, "send", count, window,
                     f"Sending too fast: at most {count} messages every {window:g} seconds.")


def _spend_or_refuse(user_id: int, kind: str, count: float, window: float, limit: str) -> None:
    """Take one from the user's ``kind`` budget, or undo the transaction and say how long to wait.

    :param limit: the sentence that states the limit; "Try again in ..." follows it.
    :raises ChatError: ``rate_limited``, with ``retry_after`` in whole seconds.
    """
    wait = spend(user_id, kind, count, window)
    if wait:
        db.session.rollback()
        raise ChatError("rate_limited", f"{limit} Try again in {_wait_words(wait)}.",
                        retry_after=max(1, math.ceil(wait)))


# ---------------------------------------------------------------------------------------- rooms


def create_room(creator: User, name: str, kind: str, invite: str = "",
                key: str | None = None) -> Room:
    """Create a public or private room; ``invite`` is a comma/space separated list of usernames.

    :param key: the form's one-time key. It travels with the ``chat.room`` event that puts the
        room in the creator's lists: a second request with it (a double submit, a retry after
        a lost answer) creates nothing, spends no budget, and returns the first room.
    :raises ChatError: for a bad name or kind, an unknown invited username, or when the creator
        reached ``CHAT_ROOMS_PER_HOUR`` (admins are exempt).
    """
    if key is not None:
        first = realtime.published(user_stream(creator), key)
        if first is not None:
            return _room_of(first)
    name = (name or "").strip().lstrip("#").strip()
    if not name or len(name) > MAX_ROOM_NAME:
        raise ChatError("bad_name", f"A room name has 1 to {MAX_ROOM_NAME} characters.")
    if kind not in ("public", "private"):
        raise ChatError("bad_kind", "A room is public or private.")
    usernames = {u for u in re.split(r"[\s,]+", invite or "") if u} - {creator.username}
    if len(usernames) > 50:
        raise ChatError("too_many", "Invite at most 50 people at once.")
    invited = list(db.session.scalars(select(User).where(User.username.in_(usernames))))
    missing = usernames - {u.username for u in invited}
    if missing:
        raise ChatError("unknown_user", "No such user: " + ", ".join(sorted(missing)))
    if not creator.is_admin:
        per_hour = setting("CHAT_ROOMS_PER_HOUR", ROOMS_PER_HOUR)
        _spend_or_refuse(creator.id, "room", per_hour, 3600.0,
                         f"You can create at most {_count(per_hour, 'room')} an hour.")
    room = Room(name=name, kind=kind, created_by=creator.id)
    db.session.add(room)
    db.session.flush()
    members = {creator.id, *(u.id for u in invited)}
    for user_id in members:
        db.session.add(RoomMember(room_id=room.id, user_id=user_id))
    db.session.flush()
    # The creator's own lists hear of the room in its transaction, with the key: a new room
    # has no messages yet (head and through 0), so this is what _announce_rooms would send.
    event = realtime.notify(creator.id, "chat.room", _room_event(room, creator.id, 0, 0),
                            session=db.session, key=key)
    if event.replayed:  # the same key committed by a request racing this one: use its room
        db.session.rollback()
        return _room_of(event)
    db.session.commit()
    saved("Your room")
    _announce_rooms(room, sorted(members - {creator.id}))
    return room


def _room_of(event: Any) -> Room:
    room = get_room(event.data["room"]["id"])
    assert room is not None  # rooms are archived, never deleted
    return room


def _room_event(room: Room, user_id: int, head: int, through: int) -> dict[str, Any]:
    return {
        "room": {"id": room.id, "kind": room.kind, "title": room_title(room, user_id),
                 "url": f"/chat/{room.id}", "messages_url": f"/chat/{room.id}/messages"},
        "head": head, "through": through, "unread": 0,
    }


def open_dm(user: User, other_username: str) -> Room:
    """The one DM room between two users, created on first use (``CHAT_DMS_PER_HOUR`` new ones
    per user and hour). Both people's open pages list it at once."""
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
    per_hour = setting("CHAT_DMS_PER_HOUR", DMS_PER_HOUR)
    _spend_or_refuse(user.id, "dm", per_hour, 3600.0,
                     f"You can start at most {_count(per_hour, 'new conversation')} an hour.")
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
    _announce_rooms(room, [low, high])
    return room


def room_title(room: Room, viewer_id: int) -> str:
    """What a viewer calls a room: ``#name``, or the other person's name for a DM."""
    return _titles([room], viewer_id)[room.id]


def _titles(rooms: list[Room], viewer_id: int) -> dict[int, str]:
    """Titles for many rooms with one query for all the DM partners' names."""
    dm_ids = [r.id for r in rooms if r.kind == "dm"]
    partners: dict[int, str] = {}
    if dm_ids:
        partners = dict(db.session.execute(
            select(RoomMember.room_id, User.username)
            .join(User, RoomMember.user_id == User.id)
            .where(RoomMember.room_id.in_(dm_ids), User.id != viewer_id)
        ).all())
    return {r.id: (f"#{r.name}" if r.kind != "dm"
                   else f"@{partners[r.id]}" if r.id in partners else r.name) for r in rooms}


def archive_room(actor: User, room: Room, archived: bool = True) -> Room:
    """An admin archives a room (or brings it back): it leaves every list, and nobody can post
    or join while it is archived; its history stays readable by those who could read it."""
    if not actor.is_admin:
        raise ChatError("forbidden", "Only admins can archive rooms.")
    if room.kind == "dm":
        raise ChatError("bad_target", "Direct messages cannot be archived.")
    if archived == (room.archived_at is not None):
        return room
    room.archived_at = utcnow() if archived else None
    room.archived_by = actor.id if archived else None
    realtime.publish(room.stream, "chat.archived", {"room": room.id, "archived": archived},
                     session=db.session)
    db.session.commit()
    return room


def _announce_rooms(room: Room, user_ids: list[int]) -> None:
    """Put a room into the lists of these users' open pages (a first DM, an invitation, a
    join in another tab), with its stream head so the page counts only what comes next."""
    if not user_ids:
        return
    head = realtime.head(room.stream)
    through = _last_id(room.id)
    for user_id in user_ids:
        try:
            realtime.notify(user_id, "chat.room", _room_event(room, user_id, head, through))
        except Exception:
            # The room is stored; the other page lists it on its next load at the latest.
            db.session.rollback()
            log.exception("chat.room announcement failed user=%s room=%s", user_id, room.id)


def rooms_for(user_id: int) -> dict[str, Any]:
    """The rooms a page lists for a user, bounded whatever the site holds.

    ``joined``: the user's own unarchived rooms (at most ``MAX_LISTED_ROOMS``, public and
    private by name, then DMs), with unread counts; ``recent``: the newest few public rooms they
    have not joined; ``hidden``: how many of their rooms did not fit.

    Each joined room (up to ``MAX_LIVE_BADGES``) also carries ``head``, its stream's last event
    id, so the page can follow it for a live badge without replaying old messages as new, and
    ``through``, the newest message id the count covers (a replayed message at or below it is
    already counted). Heads are read *before* the counts: a message landing in between is then
    replayed, and ``through`` tells the page whether it was counted.
    """
    joined_rows = db.session.execute(
        select(Room, RoomMember.last_read_message_id)
        .join(RoomMember, and_(RoomMember.room_id == Room.id, RoomMember.user_id == user_id))
        .where(Room.archived_at.is_(None))
        .order_by(Room.kind == "dm", func.lower(Room.name), Room.id)
        .limit(MAX_LISTED_ROOMS + 1)
    ).all()
    hidden = 0
    if len(joined_rows) > MAX_LISTED_ROOMS:
        hidden = db.session.scalar(
            select(func.count()).select_from(RoomMember).join(Room, Room.id == RoomMember.room_id)
            .where(RoomMember.user_id == user_id, Room.archived_at.is_(None))
        ) - MAX_LISTED_ROOMS
        joined_rows = joined_rows[:MAX_LISTED_ROOMS]
    recent_rooms = list(db.session.scalars(
        select(Room)
        .where(Room.kind == "public", Room.archived_at.is_(None),
               ~exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == user_id))
        .order_by(Room.id.desc())
        .limit(RECENT_PUBLIC_ROOMS)
    ))
    rooms = [room for room, _ in joined_rows]
    live = [room.stream for room in rooms][:MAX_LIVE_BADGES]
    heads = realtime.heads(live) if live else {}
    ids = [room.id for room in rooms]
    unread = unread_counts(user_id, ids)
    through = last_ids(ids)
    titles = _titles(rooms + recent_rooms, user_id)
    joined = [
        {"room": room, "title": titles[room.id], "member": True,
         "unread": unread.get(room.id, 0), "last_read": last_read or 0,
         "through": through.get(room.id, 0),
         "head": heads.get(room.stream, 0) if room.stream in live else None}
        for room, last_read in joined_rows
    ]
    recent = [{"room": room, "title": titles[room.id], "member": False, "unread": 0,
               "head": None, "through": 0, "last_read": 0} for room in recent_rooms]
    return {"joined": joined, "recent": recent, "hidden": hidden}


def browse(user_id: int, page: int = 1, query: str = "") -> dict[str, Any]:
    """One page of the public rooms (newest first), optionally those whose name contains
    ``query``; archived rooms are left out."""
    where = [Room.kind == "public", Room.archived_at.is_(None)]
    query = (query or "").strip().lstrip("#")[:MAX_ROOM_NAME]
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(func.lower(Room.name).like(f"%{escaped.lower()}%", escape="\\"))
    total = db.session.scalar(select(func.count()).select_from(Room).where(*where)) or 0
    pages = max(1, math.ceil(total / BROWSE_PAGE_SIZE))
    page = min(max(1, page), pages)
    rooms = list(db.session.scalars(
        select(Room).where(*where).order_by(Room.id.desc())
        .offset((page - 1) * BROWSE_PAGE_SIZE).limit(BROWSE_PAGE_SIZE)
    ))
    ids = [r.id for r in rooms]
    mine = set(db.session.scalars(select(RoomMember.room_id).where(
        RoomMember.user_id == user_id, RoomMember.room_id.in_(ids)))) if ids else set()
    members = dict(db.session.execute(
        select(RoomMember.room_id, func.count()).where(RoomMember.room_id.in_(ids))
        .group_by(RoomMember.room_id)).all()) if ids else {}
    return {"rooms": [{"room": r, "member": r.id in mine, "members": members.get(r.id, 0)}
                      for r in rooms],
            "page": page, "pages": pages, "total": total, "query": query}


def unread_counts(user_id: int, room_ids: list[int] | None = None) -> dict[int, int]:
    """Visible messages after each of the user's read positions (their own excluded)."""
    query = (
        select(RoomMember.room_id, func.count(Message.id))
        .join(Message, and_(Message.room_id == RoomMember.room_id,
                            Message.id > RoomMember.last_read_message_id))
        .where(RoomMember.user_id == user_id, Message.deleted_at.is_(None),
               or_(Message.user_id.is_(None), Message.user_id != user_id))
        .group_by(RoomMember.room_id)
    )
    if room_ids is not None:
        if not room_ids:
            return {}
        query = query.where(RoomMember.room_id.in_(room_ids))
    return {room_id: count for room_id, count in db.session.execute(query).all()}


def last_ids(room_ids: list[int]) -> dict[int, int]:
    """The newest message id of each room (one index probe each)."""
    if not room_ids:
        return {}
    return dict(db.session.execute(
        select(Message.room_id, func.max(Message.id)).where(Message.room_id.in_(room_ids))
        .group_by(Message.room_id)
    ).all())


def mark_read(room: Room, user_id: int, message_id: int | None = None) -> bool:
    """Move the read position forward (never back) to ``message_id`` or the newest message.

    The user has read the room: other areas hear it (``signals.room_read``), and when the
    unread count changed, the user's other tabs get the new count on their own stream.
    Returns whether the position moved.
    """
    member = membership(room.id, user_id)
    if member is None:
        return False
    last = _last_id(room.id)
    target = last if message_id is None else min(int(message_id), last)
    before = member.last_read_message_id or 0
    moved = target > before
    if moved:
        member.last_read_message_id = target
        cleared = db.session.scalar(
            select(func.count(Message.id)).where(
                Message.room_id == room.id, Message.id > before, Message.id <= target,
                Message.deleted_at.is_(None),
                or_(Message.user_id.is_(None), Message.user_id != user_id))
        ) or 0
        if cleared:
            unread = unread_counts(user_id, [room.id]).get(room.id, 0)
            realtime.notify(user_id, "chat.read", {
                "room": room.id, "last_read": target, "unread": unread, "through": last,
            }, session=db.session)
        db.session.commit()  # the read position and its event together
    _read_signal(room.id, user_id)
    return moved


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
    """Up to ``limit`` messages older than ``before`` (a message id), oldest first; a deleted
    message is in its page as a tombstone (``to_json`` drops its text).

    Keyset pagination on ``id``: each message appears in exactly one page however many
    messages arrive between requests, which offset pagination cannot promise.
    """
    limit = max(1, min(int(limit), PAGE_SIZE))
    query = select(Message).where(Message.room_id == room_id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(db.session.scalars(query.order_by(Message.id.desc()).limit(limit)))
    rows.reverse()
    return rows


def room_head(room_id: int) -> int:
    """The room stream's last event id, read *before* the history so nothing falls in between:
    a message stored after the history read is published after this head, so it is replayed;
    one already in the history may be replayed too, and the client drops it by message id."""
    return realtime.head(f"room:{room_id}")


def clean_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ChatError("bad_message", '"body" must be a string.')
    body = body.strip()
    if not body:
        raise ChatError("empty", "Type a message first.")
    if len(body) > MAX_BODY:
        raise ChatError("too_long", f"A message has at most {MAX_BODY:,} characters; this one "
                                    f"has {len(body):,}. Shorten it or send it in parts.")
    return body


def clean_client_id(client_id: Any) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise ChatError("bad_message", '"client_id" is 1 to 64 letters, digits, "-" or "_", '
                                       "starting with a letter or digit.")
    return client_id


def _by_client_id(user_id: int, client_id: str) -> Message | None:
    return db.session.scalar(
        select(Message).where(Message.user_id == user_id, Message.client_id == client_id))


def _same_message(existing: Message, room: Room) -> dict[str, Any]:
    if existing.room_id != room.id:
        raise ChatError("bad_message", '"client_id" was already used for another message.')
    [data] = serialize([existing])
    return data


def post_message(user_id: int, room_id: Any, body: Any, client_id: Any = None) -> dict[str, Any]:
    """Store a message, then publish it on the room's stream and notify mentioned people.

    Posting to a public room joins it. A ``client_id`` the user already sent returns that first
    message unchanged (a resend after a lost reply), nothing is stored or published twice.

    :raises ChatError: forbidden, archived, empty, too_long, bad_message, rate_limited.
    """
    room = readable_room(room_id, user_id)
    text = clean_body(body)
    cid = clean_client_id(client_id)
    if cid is not None:
        existing = _by_client_id(user_id, cid)
        if existing is not None:
            return _same_message(existing, room)
    _refuse_archived(room)
    join(room, user_id)  # members only for private rooms and DMs (raises); joins public ones
    _check_send_rate(user_id)
    message = Message(room_id=room.id, user_id=user_id, body=text, client_id=cid)
    db.session.add(message)
    try:
        db.session.flush()
        [data] = serialize([message])
        # The message and its event commit together; the push leaves after the commit, and a
        # follower that misses it replays the event from the log.
        realtime.publish(room.stream, "chat.message", data, session=db.session)
        db.session.commit()
        saved("Your message")
    except IntegrityError:
        # The same client id in a request running at this very moment: that one is stored.
        db.session.rollback()
        existing = _by_client_id(user_id, cid) if cid else None
        if existing is None:
            raise
        return _same_message(existing, room)
    mark_read(room, user_id, message.id)
    _notify(room, message, data["user"]["name"])
    return data


def _mentioned(body: str) -> set[str]:
    """Names after ``@``; a name may end a sentence ("thanks @bob."), so both forms count."""
    names = set()
    for name in _MENTION.findall(body):
        names.add(name)
        names.add(name.rstrip(".-"))
    return {n for n in names if n}


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
        names = _mentioned(message.body)
        if names:
            for uid in db.session.scalars(select(User.id).where(User.username.in_(names))):
                if uid in member_ids and uid != message.user_id:
                    targets.append((uid, "mention", f"{sender} mentioned you in #{room.name}"))
    if not targets:
        return
    try:
        from app.notifications.service import create_notification
    except ImportError:  # the notifications area is optional for chat
        log.warning("notifications unavailable; chat notifications skipped")
        return
    for uid, kind, title in targets:
        try:
            create_notification(uid, kind, title, message.body[:300], link)
        except Exception:
            # The message is stored and delivered; a failed notification must not undo that.
            db.session.rollback()
            log.exception("chat notification failed user=%s", uid)


def _message_for(actor: User, message_id: Any, action: str) -> Message:
    number = parse_id(message_id)
    if number is None:
        raise ChatError("bad_message", '"message" must be a message id.')
    message = db.session.get(Message, number)
    own = message is not None and message.user_id == actor.id
    allowed = own or (action == "delete" and actor.is_admin)
    if not allowed:
        # Someone else's message and an unknown id look alike to anyone without the right.
        what = "your own messages" if action == "edit" else "your own messages (admins: any)"
        raise ChatError("forbidden", f"You can {action} only {what}.")
    assert message is not None
    if own and membership(message.room_id, actor.id) is None:
        raise ChatError("forbidden", "You are no longer in that room.")
    return message


def edit_message(actor: User, message_id: Any, body: Any) -> dict[str, Any]:
    """The author changes their message; everybody's page shows the new text, marked edited."""
    message = _message_for(actor, message_id, "edit")
    text = clean_body(body)
    if message.deleted_at is not None:
        raise ChatError("gone", "That message was deleted.")
    room = db.session.get(Room, message.room_id)
    assert room is not None
    _refuse_archived(room)
    if text != message.body:
        # An edit reaches every page like a message does, so it spends from the same budget.
        _check_send_rate(actor.id)
        message.body = text
        message.edited_at = utcnow()
        db.session.flush()
        [data] = serialize([message])
        realtime.publish(room.stream, "chat.edited", data, session=db.session)
        db.session.commit()
        return data
    [data] = serialize([message])
    return data


def delete_message(actor: User, message_id: Any) -> Message:
    """The author (or an admin) deletes a message: everybody's page shows a tombstone in its
    place; the row stays, marked with who and when, without being shown."""
    message = _message_for(actor, message_id, "delete")
    if message.deleted_at is None:
        room = db.session.get(Room, message.room_id)
        if room is not None and message.user_id == actor.id and not actor.is_admin:
            _refuse_archived(room)
        message.deleted_at = utcnow()
        message.deleted_by = actor.id
        realtime.publish(f"room:{message.room_id}", "chat.deleted",
                         {"message": message.id, "room": message.room_id}, session=db.session)
        db.session.commit()
    return message


def members_matching(room: Room, prefix: str, viewer_id: int,
                     limit: int = MEMBER_MATCHES) -> list[dict[str, Any]]:
    """Room members whose name starts with ``prefix`` (case-insensitive), for @-autocomplete."""
    prefix = (prefix or "").strip().lstrip("@")[:64]
    query = (select(User.id, User.username).join(RoomMember, RoomMember.user_id == User.id)
             .where(RoomMember.room_id == room.id, User.id != viewer_id, User.active.is_(True)))
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(User.username).like(escaped.lower() + "%", escape="\\"))
    rows = db.session.execute(query.order_by(func.lower(User.username)).limit(limit)).all()
    return [{"id": uid, "name": name} for uid, name in rows]
