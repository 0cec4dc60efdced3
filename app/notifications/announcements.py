"""Announcements: who is in the audience, publishing, editing, ending, retracting, dismissing,
and the live-reach ack.

Every change an admin makes after publishing travels the same way as the announcement itself
(store first, then an event on the same audience streams), so open pages follow it live and a
page that reconnects replays it in order: the banner appears, then changes, then goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from app.errors import saved
from app.extensions import db, realtime
from app.models import ROLES, User, utcnow
from app.notifications.models import (
    AUDIENCES,
    LEVELS,
    Announcement,
    AnnouncementDismissal,
    AnnouncementRecipient,
    AnnouncementSeen,
)
from app.notifications.service import MAX_ID, NotFound

#: Recent announcements a user's dashboard lists as history.
HISTORY_FOR_USER = 5


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


def _live(now: datetime | None = None):
    """SQL condition: still showing (not expired, ended or retracted)."""
    return and_(_not_expired(now), Announcement.ended_at.is_(None),
                Announcement.retracted_at.is_(None))


def _dismissed_by(user: User):
    return exists().where(
        AnnouncementDismissal.announcement_id == Announcement.id,
        AnnouncementDismissal.user_id == user.id,
    )


def active_for(user: User, now: datetime | None = None) -> list[Announcement]:
    """What the banner area shows ``user``: addressed to them, live, not dismissed."""
    return list(db.session.scalars(
        select(Announcement)
        .where(_for_user(user), _live(now), ~_dismissed_by(user))
        .order_by(Announcement.id.desc())
    ))


def history_for(user: User, limit: int = HISTORY_FOR_USER,
                now: datetime | None = None) -> list[Announcement]:
    """The dashboard's list: what ``user`` was told before and no longer has as a banner.

    Live banners are not repeated here (one surface per announcement); retracted ones are gone
    everywhere.
    """
    return list(db.session.scalars(
        select(Announcement)
        .where(_for_user(user), Announcement.retracted_at.is_(None),
               or_(~_live(now), _dismissed_by(user)))
        .order_by(Announcement.id.desc())
        .limit(limit)
    ))


def announcement_key(value: Any) -> int:
    """A client's announcement id as a row id, else NotFound (never an overflow in the database)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NotFound("No such announcement.")
    try:
        key = int(value)
    except ValueError:
        raise NotFound("No such announcement.") from None
    if not 0 < key <= MAX_ID:
        raise NotFound("No such announcement.")
    return key


def get(announcement_id: Any) -> Announcement:
    """Any announcement by id (admins), else NotFound."""
    found = db.session.get(Announcement, announcement_key(announcement_id))
    if found is None:
        raise NotFound("No such announcement.")
    return found


def addressed_to(user: User, announcement_id: Any) -> Announcement:
    """The announcement if ``user`` is in its audience, else NotFound (whatever the reason)."""
    key = announcement_key(announcement_id)
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
    key: str | None = None,
) -> Announcement:
    """Store an announcement and push it to its audience's open pages.

    Users offline now see it on their next page load (the banner area reads the table).

    :param key: the compose form's one-time key. A second publish with it (a double submit,
        a retry after a lost answer) stores nothing and returns the first announcement.
    """
    _check_level(level)
    if audience not in AUDIENCES:
        raise ValueError(f"audience is one of {', '.join(AUDIENCES)}")
    if audience == "role" and role not in ROLES:
        raise ValueError(f"role is one of {', '.join(ROLES)}")
    chosen = list({user.id: user for user in users}.values())
    if audience == "users" and not chosen:
        raise ValueError("Choose at least one user.")
    announcement = Announcement(
        author_id=author.id if author else None,
        title=_clean_title(title),
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
    events = _tell_audience(announcement, "announcement", announcement.to_json(), key=key)
    if any(event.replayed for event in events):
        # Already sent with this key: drop this copy, answer with the first one. (Its event
        # was found under the unique key, so there is exactly one, whatever raced.)
        db.session.rollback()
        saved("Your announcement")
        return get(events[0].data["id"])
    db.session.commit()
    saved("Your announcement")
    # Loaded again after the commit, so the row the caller gets (a CLI command, a job) can be
    # read after its session has ended.
    db.session.refresh(announcement)
    return announcement


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level is one of {', '.join(LEVELS)}")


def _clean_title(title: str) -> str:
    title = (title or "").strip()
    if not title:
        raise ValueError("An announcement needs a title.")
    return title[:200]


def audience_size(audience: str, role: str | None = None, users: Iterable[User] = ()) -> int:
    """How many active accounts an announcement would reach now (the preview says it)."""
    if audience == "all":
        query = select(func.count()).select_from(User).where(User.active.is_(True))
    elif audience == "role":
        query = select(func.count()).select_from(User).where(User.active.is_(True),
                                                              User.role == role)
    else:
        return sum(1 for user in {u.id: u for u in users}.values() if user.active)
    return db.session.scalar(query) or 0


def _tell_audience(announcement: Announcement, type_: str, data: dict[str, Any],
                   key: str | None = None) -> list[Any]:
    """Publish on the streams the announcement went out on, so exactly its audience hears.

    The events join the session's transaction: the announcement's row and its events commit
    together (the caller commits), so a banner is never stored without being delivered, live or
    on resume, nor delivered without being stored.
    """
    target: Any = None
    if announcement.audience == "role":
        target = {"role": announcement.audience_role}
    elif announcement.audience == "users":
        target = {"users": list(db.session.scalars(
            select(AnnouncementRecipient.user_id)
            .where(AnnouncementRecipient.announcement_id == announcement.id)
            .order_by(AnnouncementRecipient.user_id)
        ))}
    return realtime.broadcast(type_, data, audience=target, session=db.session, key=key)


def edit(announcement_id: Any, title: str, body: str, level: str) -> Announcement:
    """Change the text or level of a sent announcement; open banners change in place."""
    announcement = get(announcement_id)
    if announcement.retracted_at is not None:
        raise ValueError("A retracted announcement cannot be edited.")
    _check_level(level)
    announcement.title = _clean_title(title)
    announcement.body = (body or "").strip()
    announcement.level = level
    announcement.updated_at = utcnow()
    _tell_audience(announcement, "announcement.updated", announcement.to_json())
    db.session.commit()
    return announcement


def end(announcement_id: Any) -> Announcement:
    """Stop showing it now; it stays in history. Ending twice changes (and says) nothing."""
    announcement = get(announcement_id)
    if announcement.ended_at is not None or announcement.retracted_at is not None:
        return announcement
    announcement.ended_at = utcnow()
    _tell_audience(announcement, "announcement.ended", {"id": announcement.id})
    db.session.commit()
    return announcement


def retract(announcement_id: Any) -> Announcement:
    """Take it back: gone from every banner and every user's history, at once."""
    announcement = get(announcement_id)
    if announcement.retracted_at is not None:
        return announcement
    announcement.retracted_at = utcnow()
    _tell_audience(announcement, "announcement.retracted", {"id": announcement.id})
    db.session.commit()
    return announcement


def dismissed_count(announcement_id: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(AnnouncementDismissal)
        .where(AnnouncementDismissal.announcement_id == announcement_id)
    ) or 0


def _push_figures(announcement: Announcement) -> None:
    """The admins' history page follows its figures live.

    Ephemeral (not stored): a page loaded later renders the same figures from the table, so
    nothing would replay them, and acks from a large audience must not fill the durable log.
    """
    realtime.emit("role:admin", "announcement.figures", {
        "id": announcement.id,
        "recipients": announcement.recipients,
        "live_reached": announcement.live_reached,
        "dismissed": dismissed_count(announcement.id),
    })


def expires_in(minutes: int | None) -> datetime | None:
    return utcnow() + timedelta(minutes=minutes) if minutes else None


def dismiss(user: User, announcement_id: Any) -> Announcement:
    """Close the banner for good, and in the user's other tabs too.

    Only the first dismissal is published: repeating it (a second tab, a retry, a hostile loop)
    stores nothing more.
    """
    announcement = addressed_to(user, announcement_id)
    already = db.session.scalar(select(AnnouncementDismissal.id).where(
        AnnouncementDismissal.announcement_id == announcement.id,
        AnnouncementDismissal.user_id == user.id,
    ))
    if already is not None:
        return announcement
    db.session.add(AnnouncementDismissal(announcement_id=announcement.id, user_id=user.id))
    try:
        db.session.flush()
        # The dismissal and its event commit together (see _tell_audience).
        realtime.notify(user.id, "announcement.dismissed", {"id": announcement.id},
                        session=db.session)
        db.session.commit()
    except IntegrityError:
        # Two tabs dismissed at once; the other one won and told every tab.
        db.session.rollback()
        return announcement
    _push_figures(announcement)
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
    _push_figures(announcement)
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
    return announcement.status(now) == "live"
