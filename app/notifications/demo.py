"""Demo data: every account gets a welcome notification, so the bell has something to show."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import exists, select

from app.extensions import db
from app.models import User
from app.notifications.models import Notification
from app.notifications.service import create_notification

WELCOME_TITLE = "Welcome to Tidings"
WELCOME_BODY = ("Notifications land under the bell as they happen. "
                "Choose which ones pop up in your notification preferences.")
WELCOME_LINK = "/notifications/preferences"


def welcome(user: User):
    """The first notification of a new account."""
    return create_notification(user, "welcome", WELCOME_TITLE, body=WELCOME_BODY, link=WELCOME_LINK)


def seed_demo(usernames: Iterable[str]) -> int:
    """Welcome each of these accounts (the demo ones) that has no welcome notification yet;
    returns how many.

    Only the named accounts: this runs at every start of a development server, and a site's
    other accounts were welcomed when they registered. Welcoming "every account without one"
    made a restart do one publish per account (40 s before the workers booted, with 5,000
    accounts made without the form: issue 18's reconnect storm).
    """
    has_welcome = exists().where(Notification.user_id == User.id, Notification.kind == "welcome")
    users = list(db.session.scalars(
        select(User).where(User.username.in_(list(usernames)), ~has_welcome).order_by(User.id)))
    for user in users:
        welcome(user)
    return len(users)
