"""Chat rows: rooms, who belongs to them, their messages, and who is looking at them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models import utcnow

#: Room kinds: anyone may read and join a public room; private rooms and DMs are members-only.
ROOM_KINDS = ("public", "private", "dm")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (SQLite returns naive UTC datetimes, PostgreSQL aware ones)."""
    if value is None:
        return None
    if value.tzinfo:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


class Room(db.Model):
    """A conversation. DMs carry ``dm_key`` ("low_id:high_id") so a pair has exactly one."""

    __tablename__ = "chat_rooms"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="public")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A unique column rather than a lookup-then-insert check: two tabs opening the same DM at
    # once cannot create two rooms.
    dm_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    #: Set by an admin: the room leaves every list and its history becomes read-only.
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    archived_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )

    @property
    def stream(self) -> str:
        return f"room:{self.id}"


class RoomMember(db.Model):
    """Membership and read position: unread = messages with an id above ``last_read_message_id``."""

    __tablename__ = "chat_room_members"
    __table_args__ = (
        UniqueConstraint("room_id", "user_id", name="uq_chat_room_members_room_user"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(
        ForeignKey("chat_rooms.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_read_message_id: Mapped[int] = mapped_column(Integer, default=0)


class Message(db.Model):
    """One chat message; order is ``id``. Deleted messages keep their row (a tombstone in the
    history, without the text)."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        Index("ix_chat_messages_room_id_id", "room_id", "id"),
        Index("ix_chat_messages_user_created", "user_id", "created_at"),
        # The page's own id for a message: a resend after a lost reply finds the first copy
        # instead of storing a second one, even when both arrive at once.
        UniqueConstraint("user_id", "client_id", name="uq_chat_messages_user_client"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("chat_rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def to_json(self, sender_name: str) -> dict[str, Any]:
        deleted = self.deleted_at is not None
        data: dict[str, Any] = {
            "id": self.id,
            "room": self.room_id,
            "user": {"id": self.user_id, "name": sender_name},
            # A tombstone keeps its place and author, never its text.
            "body": "" if deleted else self.body,
            "created_at": iso(self.created_at),
            "edited_at": None if deleted else iso(self.edited_at),
            "deleted": deleted,
        }
        if self.client_id:
            data["client_id"] = self.client_id
        return data


class Budget(db.Model):
    """A token bucket per (user, action): ``tokens`` as of ``updated_at`` (Unix seconds).

    Spending is one conditional UPDATE (see service.spend), so concurrent requests in any number
    of workers cannot spend the same token twice, which a count-then-insert check allows.
    """

    __tablename__ = "chat_budgets"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Presence(db.Model):
    """Who has a socket following a room, when Redis is not configured (see presence.py)."""

    __tablename__ = "chat_presence"
    __table_args__ = (
        UniqueConstraint("room_id", "conn_id", name="uq_chat_presence_room_conn"),
        Index("ix_chat_presence_room_expires", "room_id", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(Integer)
    conn_id: Mapped[str] = mapped_column(String(128), index=True)
    # Unix seconds, so comparisons do not depend on how the database stores timezones.
    expires_at: Mapped[float] = mapped_column(Float)
