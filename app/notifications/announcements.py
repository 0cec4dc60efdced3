"""Announcements: who is in the audience, publishing, dismissing and the live-reach ack."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from app.extensions import db, realtime
from app.models import ROLES, User, utcnow
from app.notifications.models import (
    AUDIENCES,
    LEVELS,
    Announcement,
    AnnouncementDismissal,
    AnnouncementRecipient,
    AnnouncementSeen,
    naive_utc,
)
from app.notifications.service import NotFound


def parse_usernames(text: str | Iterable[str]) -> tuple[list[User], list[str]]:
    """Turn "alice, bob" into accounts; returns (users found, names not found)."""
    names = text.split(",") if isinstance(text, str) else list(text)
    wanted = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    found = {
        user.username: user
        for user in db.session.scalars(select(User).where(User.username.in_(wanted)))
    } if wanted else {}
    return [found[n] for n in wanted if n in found], [n for n in wanted if n not in found]


def audience_user_ids(announcement: Announcement) -> list[int]:
    """Active accounts the announcement is for, resolved now."""
    query = select(User.id).where(User.active.is_(True))
    if announcement.audience == "role":
        query = query.where(User.role == announcement.audience_role)
    elif announcement.audience == "users":
        query = query.join(AnnouncementRecipient, AnnouncementRecipient.user_id == User.id).where(
            AnnouncementRecipient.announcement_id == announcement.id
        )
    return list(db.session.scalars(query.order_by(User.id)))


def _for_user(user: User):
    """SQL condition: the announcement is addressed to ``user``."""
    return or_(
        Announcement.audience == "all",
        and_(Announcement.audience == "role", Announcement.audience_role == user.role),
        and_(
            Announcement.audience == "users",
            exists().where(
                AnnouncementRecipient.announcement_id == Announcement.id,
                AnnouncementRecipient.user_id == user.id,
            ),
        ),
    )


def _not_expired(now: datetime | None = None):
    now = now or utcnow()
    return or_(Announcement.expires_at.is_(None), Announcement.expires_at > now)


def active_for(user: User, now: datetime | None = None) -> list[Announcement]:
    """What the banner area shows ``user``: addressed to them, unexpired, not dismissed."""
    dismissed = exists().where(
        AnnouncementDismissal.announcement_id == Announcement.id,
        AnnouncementDismissal.user_id == user.id,
    )
    return list(db.session.scalars(
        select(Announcement)
        .where(_for_user(user), _not_expired(now), ~dismissed)
        .order_by(Announcement.id.desc())
    ))


def addressed_to(user: User, announcement_id: Any) -> Announcement:
    """The announcement if ``user`` is in its audience, else NotFound (whatever the reason)."""
    if isinstance(announcement_id, bool) or not isinstance(announcement_id, (int, str)):
        raise NotFound("No such announcement.")
    try:
        key = int(announcement_id)
    except ValueError:
        raise NotFound("No such announcement.") from None
    found = db.session.scalar(
        select(Announcement).where(Announcement.id == key, _for_user(user))
    )
    if found is None:
        raise NotFound("No such announcement.")
    return found


def publish(
    author: User | None,
    title: str,
    body: str = "",
    level: str = "info",
    audience: str = "all",
    role: str | None = None,
    users: Iterable[User] = (),
    expires_at: datetime | None = None,
) -> Announcement:
    """Store an announcement and push it to its audience's open pages.

    Users offline now see it on their next page load (the banner area reads the table).
    """
    if level not in LEVELS:
        raise ValueError(f"level is one of {', '.join(LEVELS)}")
    if audience not in AUDIENCES:
        raise ValueError(f"audience is one of {', '.join(AUDIENCES)}")
    if audience == "role" and role not in ROLES:
        raise ValueError(f"role is one of {', '.join(ROLES)}")
    chosen = list({user.id: user for user in users}.values())
    if audience == "users" and not chosen:
        raise ValueError("Choose at least one user.")
    title = (title or "").strip()
    if not title:
        raise ValueError("An announcement needs a title.")
    announcement = Announcement(
        author_id=author.id if author else None,
        title=title[:200],
        body=(body or "").strip(),
        level=level,
        audience=audience,
        audience_role=role if audience == "role" else None,
        expires_at=expires_at,
    )
    db.session.add(announcement)
    db.session.flush()
    if audience == "users":
        db.session.add_all(
            AnnouncementRecipient(announcement_id=announcement.id, user_id=user.id)
            for user in chosen
        )
        db.session.flush()
    announcement.recipients = len(audience_user_ids(announcement))
    db.session.commit()

    target: Any = None
    if audience == "role":
        target = {"role": role}
    elif audience == "users":
        target = {"users": [user.id for user in chosen]}
    realtime.broadcast("announcement", announcement.to_json(), audience=target)
    return announcement


def expires_in(minutes: int | None) -> datetime | None:
    return utcnow() + timedelta(minutes=minutes) if minutes else None


def dismiss(user: User, announcement_id: Any) -> Announcement:
    """Close the banner for good, and in the user's other tabs too."""
    announcement = addressed_to(user, announcement_id)
    already = db.session.scalar(select(AnnouncementDismissal.id).where(
        AnnouncementDismissal.announcement_id == announcement.id,
        AnnouncementDismissal.user_id == user.id,
    ))
    if already is None:
        db.session.add(AnnouncementDismissal(announcement_id=announcement.id, user_id=user.id))
        try:
            db.session.commit()
        except IntegrityError:
            # Two tabs dismissed at once; the other one won, which is just as good.
            db.session.rollback()
    realtime.notify(user.id, "announcement.dismissed", {"id": announcement.id})
    return announcement


def record_seen(user: User, announcement_id: Any) -> Announcement:
    """The user's page got the live event: count that user once towards ``live_reached``."""
    announcement = addressed_to(user, announcement_id)
    db.session.add(AnnouncementSeen(announcement_id=announcement.id, user_id=user.id))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # another tab or a replay already counted this user
        return announcement
    # Recount rather than increment, so concurrent acks from several workers cannot drift.
    announcement.live_reached = db.session.scalar(
        select(func.count()).select_from(AnnouncementSeen)
        .where(AnnouncementSeen.announcement_id == announcement.id)
    ) or 0
    db.session.commit()
    return announcement


def history(limit: int = 50) -> list[tuple[Announcement, int]]:
    """Recent announcements with how many users dismissed (read) each."""
    dismissed = (
        select(func.count()).select_from(AnnouncementDismissal)
        .where(AnnouncementDismissal.announcement_id == Announcement.id)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Announcement, dismissed).order_by(Announcement.id.desc()).limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


def is_active(announcement: Announcement, now: datetime | None = None) -> bool:
    if announcement.expires_at is None:
        return True
    return naive_utc(announcement.expires_at) > naive_utc(now or utcnow())
