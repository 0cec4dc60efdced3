"""Notification and announcement rows: the durable truth that live events only announce."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models import utcnow

#: Kinds of notification a user can tune live toasts for.
KINDS = ("welcome", "mention", "dm", "announcement", "system")

#: Announcement severities, mildest first; each has its own banner style.
LEVELS = ("info", "warning", "critical")

#: Who an announcement is for.
AUDIENCES = ("all", "role", "users")


def naive_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones: compare as naive
    UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, which every browser's ``Date`` parses."""
    if value is None:
        return None
    return naive_utc(value).isoformat(timespec="seconds") + "Z"


class Notification(db.Model):
    """One message for one user, shown under the bell until read."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_read", "user_id", "read_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="system")
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    link: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def is_read(self) -> bool:
        return self.read_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "link": self.link,
            "created_at": iso(self.created_at),
            "read": self.is_read,
        }


class NotificationPreference(db.Model):
    """Whether a kind of notification pops up a toast live; absent rows mean "yes"."""

    __tablename__ = "notification_preferences"
    __table_args__ = (UniqueConstraint("user_id", "kind", name="uq_notification_pref_user_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    live_toasts: Mapped[bool] = mapped_column(Boolean, default=True)


class Announcement(db.Model):
    """A banner an admin sends to everyone, a role or chosen users, with delivery figures."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    level: Mapped[str] = mapped_column(String(16), default="info")
    audience: Mapped[str] = mapped_column(String(16), default="all")
    audience_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    #: Accounts in the audience when it was published.
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    #: Distinct users whose open page acknowledged the live event (see AnnouncementSeen).
    live_reached: Mapped[int] = mapped_column(Integer, default=0)
    #: Last edit by an admin (text or level); open pages were told.
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: An admin ended it early: banners go away, it stays in everyone's history.
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: An admin took it back: gone from banners and from users' history, as if never sent.
    retracted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    def status(self, now: datetime | None = None) -> str:
        """``live``, ``expired``, ``ended`` or ``retracted``: what the admin's history says."""
        if self.retracted_at is not None:
            return "retracted"
        if self.ended_at is not None:
            return "ended"
        if self.expires_at is not None and naive_utc(self.expires_at) <= naive_utc(
            now or datetime.now(UTC)
        ):
            return "expired"
        return "live"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "level": self.level,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "updated_at": iso(self.updated_at),
        }


class AnnouncementRecipient(db.Model):
    """One chosen user of an announcement whose audience is "users"."""

    __tablename__ = "announcement_recipients"

    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("announcements.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AnnouncementDismissal(db.Model):
    """A user closed the banner: it stays closed in every tab and on every later visit.

    Dismissal is also how we count an announcement as read.
    """

    __tablename__ = "announcement_dismissals"
    __table_args__ = (
        UniqueConstraint("announcement_id", "user_id", name="uq_announcement_dismissal"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("announcements.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    dismissed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AnnouncementSeen(db.Model):
    """A user's page received the announcement over its socket and said so.

    One row per (announcement, user), so ``live_reached`` counts people, not tabs or replays.
    """

    __tablename__ = "announcement_seen"
    __table_args__ = (UniqueConstraint("announcement_id", "user_id", name="uq_announcement_seen"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("announcements.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
