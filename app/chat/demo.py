"""Demo content: a public room "general" where alice and bob have already said hello."""

from __future__ import annotations

from sqlalchemy import select

from app.chat.models import Message, Room, RoomMember
from app.extensions import db
from app.models import User

#: (username, body) of the messages a fresh "general" room starts with.
DEMO_MESSAGES = (
    ("alice", "Welcome to #general! Say hi 👋"),
    ("bob", "Hi @alice — the chat panel sits at the bottom right of every page."),
)


def seed_demo() -> Room | None:
    """Create "general" with alice and bob as members and a couple of messages, if missing.

    Rows only, no live publish: this runs at start-up before anyone is connected. Returns the
    room, or None when the demo accounts do not exist.
    """
    users = {u.username: u for u in db.session.scalars(
        select(User).where(User.username.in_(["alice", "bob"])))}
    if len(users) < 2:
        return None
    room = db.session.scalar(select(Room).where(Room.name == "general", Room.kind == "public"))
    if room is not None:
        return room
    room = Room(name="general", kind="public", created_by=users["alice"].id)
    db.session.add(room)
    db.session.flush()
    for user in users.values():
        db.session.add(RoomMember(room_id=room.id, user_id=user.id))
    for username, body in DEMO_MESSAGES:
        db.session.add(Message(room_id=room.id, user_id=users[username].id, body=body))
    db.session.commit()
    return room
