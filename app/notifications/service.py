"""Create, count and mark notifications: store the row first, then tell the user's open tabs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update

from app.auth.redirects import is_safe_next
from app.extensions import db, realtime
from app.models import User, utcnow
from app.notifications.models import KINDS, Notification, NotificationPreference

#: How many notifications the bell's dropdown shows.
BELL_SIZE = 5

#: Inbox page size.
PAGE_SIZE = 20

#: Longest title we store (the column's size); longer ones are cut rather than refused.
MAX_TITLE = 200

#: Largest id a row can have (PostgreSQL's ``integer``). A bigger number from a URL or a socket
#: is simply no row of ours; handing it to the database would overflow (SQLite) or error.
MAX_ID = 2**31 - 1


class NotFound(LookupError):
    """An id that is not one of this user's notifications (or announcements)."""


def clean_link(link: str | None) -> str | None:
    """Accept only a relative path on this site or an http(s) URL.

    ``javascript:`` and ``data:`` links would run code when clicked, and ``//host`` is another
    site in disguise, so they are refused with ValueError.
    """
    if link is None or not link.strip():
        return None
    link = link.strip()
    if link.startswith("/"):
        if is_safe_next(link):
            return link
        raise ValueError("A link must be a path on this site (/...) or an http(s) URL.")
    parts = urlsplit(link)
    if parts.scheme in ("http", "https") and parts.netloc and not any(
        ord(ch) < 0x20 or ch in " \\" for ch in link
    ):
        return link
    raise ValueError("A link must be a path on this site (/...) or an http(s) URL.")


def _user_id(user_or_id: Any) -> int:
    return int(getattr(user_or_id, "id", user_or_id))


def row_id(value: Any) -> int:
    """A client's id as an int that can name a row; anything else is :class:`NotFound`.

    ``True``, floats, ``"1e3"`` and 20-digit numbers come from hostile or broken clients: they
    get the same 404 / not_found as an id that belongs to someone else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NotFound("No such notification.")
    try:
        number = int(value)
    except ValueError:
        raise NotFound("No such notification.") from None
    if not 0 < number <= MAX_ID:
        raise NotFound("No such notification.")
    return number


def unread_count(user: Any) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Notification).where(
            Notification.user_id == _user_id(user), Notification.read_at.is_(None)
        )
    ) or 0


def latest(user: Any, limit: int = BELL_SIZE) -> list[Notification]:
    return list(db.session.scalars(
        select(Notification).where(Notification.user_id == _user_id(user))
        .order_by(Notification.id.desc()).limit(limit)
    ))


def inbox_query(user: Any, unread_only: bool = False):
    query = select(Notification).where(Notification.user_id == _user_id(user))
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    return query.order_by(Notification.id.desc())


def create_notification(
    user_or_id: Any, kind: str, title: str, body: str | None = None, link: str | None = None
) -> Notification:
    """Store a notification for one user and push it to every tab they have open.

    :param user_or_id: a ``User`` or a user id.
    :param kind: one of :data:`KINDS` (others are stored as given; toasts default to on).
    :param link: a relative path or an http(s) URL; anything else raises ValueError.
    :returns: the committed row.
    """
    user_id = _user_id(user_or_id)
    if db.session.get(User, user_id) is None:
        raise NotFound(f"No user {user_id}.")
    title = (title or "").strip()
    if not title:
        raise ValueError("A notification needs a title.")
    notification = Notification(
        user_id=user_id,
        kind=(kind or "system")[:32],
        title=title[:MAX_TITLE],
        body=(body or None),
        link=clean_link(link),
    )
    db.session.add(notification)
    db.session.flush()
    # The row and its event commit together; the push leaves after the commit, and a tab that
    # misses it replays the event from the log.
    realtime.notify(user_id, "notification",
                    {**notification.to_json(), "unread": unread_count(user_id)},
                    session=db.session)
    db.session.commit()
    return notification


def _publish_read(user_id: int, changed: list[int] | None) -> None:
    """Tell every tab of the user what became read, or nothing at all if nothing did.

    Only real changes are published: a client repeating ``mark_read`` (four tabs, a replay, a
    hostile loop) stores no event, so the durable log cannot grow from already-read rows.
    ``None`` means "everything".
    """
    if changed == []:
        return
    data: dict[str, Any] = {"all": True} if changed is None else {"ids": changed}
    realtime.notify(user_id, "notification.read", {**data, "unread": unread_count(user_id)},
                    session=db.session)


def _set_read(user_id: int, ids: Iterable[int]) -> list[int]:
    """Mark the given unread rows of the user read, tell their tabs, and commit both together;
    returns the ids that really changed.

    ``read_at IS NULL`` in the UPDATE itself decides, so two requests racing over the same rows
    (the page that opened a target and a click in the bell) change each row once between them.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return []
    changed = db.session.scalars(
        update(Notification)
        .where(Notification.id.in_(wanted), Notification.user_id == user_id,
               Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .returning(Notification.id)
    ).all()
    changed = sorted(changed)
    _publish_read(user_id, changed)
    db.session.commit()
    return changed


def mark_read(user: Any, ids: Iterable[Any]) -> list[int]:
    """Mark some of ``user``'s notifications read; every tab of theirs hears about it.

    :returns: the ids that were unread and now are read (empty when all already were: then
        nothing is published).
    :raises NotFound: if any id is not this user's (then nothing changes at all).
    """
    user_id = _user_id(user)
    wanted = {row_id(value) for value in ids}
    if not wanted:
        return []
    owned = set(db.session.scalars(select(Notification.id).where(
        Notification.id.in_(wanted), Notification.user_id == user_id
    )))
    if owned != wanted:
        raise NotFound("No such notification.")
    return _set_read(user_id, owned)


def mark_all_read(user: Any) -> int:
    """Mark every unread notification of ``user`` read; returns how many changed."""
    user_id = _user_id(user)
    result = db.session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
    )
    changed = result.rowcount or 0
    if changed:
        _publish_read(user_id, None)
    db.session.commit()
    return changed


def _link_matches(path: str):
    """SQL condition: the notification points at ``path`` (a ``#fragment`` never reaches us)."""
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(Notification.link == path, Notification.link.like(escaped + "#%", escape="\\"))


def mark_read_for_target(user: Any, paths: Iterable[str]) -> list[int]:
    """The user opened ``paths`` (a page, a chat room): what pointed there is read now.

    GitHub's rule: a notification is done once you have seen what it points to, wherever you
    saw it. A read-only query comes first, so the usual page view (nothing unread points at it)
    never takes SQLite's write lock.
    """
    user_id = _user_id(user)
    targets = [p for p in dict.fromkeys(paths) if p and len(p) <= 500]
    if not targets:
        return []
    pending = list(db.session.scalars(
        select(Notification.id).where(
            Notification.user_id == user_id,
            Notification.read_at.is_(None),
            or_(*(_link_matches(p) for p in targets)),
        )
    ))
    if not pending:
        return []
    return _set_read(user_id, pending)


def preferences(user: Any) -> dict[str, bool]:
    """Live-toast setting per kind; kinds without a row default to on."""
    stored = {
        pref.kind: pref.live_toasts
        for pref in db.session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == _user_id(user))
        )
    }
    return {kind: stored.get(kind, True) for kind in KINDS}


def set_preferences(user: Any, toasts: dict[str, bool]) -> None:
    user_id = _user_id(user)
    existing = {
        pref.kind: pref
        for pref in db.session.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == user_id)
        )
    }
    for kind in KINDS:
        value = bool(toasts.get(kind, False))
        if kind in existing:
            existing[kind].live_toasts = value
        else:
            db.session.add(NotificationPreference(user_id=user_id, kind=kind, live_toasts=value))
    db.session.commit()
