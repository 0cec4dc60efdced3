"""Login throttling: count recent failures per account and per client address in the database."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import delete, select

from app.extensions import db
from app.models import LoginAttempt, utcnow


@dataclass(frozen=True)
class Lockout:
    """Why a login is refused, and for how long."""

    retry_after_seconds: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after_seconds / 60))


def _keys(username: str, address: str | None) -> list[tuple[str, int]]:
    config = current_app.config
    keys = [(f"account:{username.strip().lower()}", config["LOGIN_MAX_FAILURES_PER_ACCOUNT"])]
    if address:
        keys.append((f"address:{address}", config["LOGIN_MAX_FAILURES_PER_ADDRESS"]))
    return keys


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_lockout(username: str, address: str | None) -> Lockout | None:
    """Return a :class:`Lockout` if the account or the address has too many recent failures."""
    window = timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
    now = utcnow()
    since = now - window
    worst: Lockout | None = None
    for key, limit in _keys(username, address):
        times = db.session.scalars(
            select(LoginAttempt.created_at)
            .where(LoginAttempt.key == key, LoginAttempt.created_at > since)
            .order_by(LoginAttempt.created_at.desc())
            .limit(limit)
        ).all()
        if len(times) < limit:
            continue
        # The lock lifts when the oldest of the last `limit` failures leaves the window.
        unlock_at = _aware(times[-1]) + window
        lockout = Lockout(max(1, int((unlock_at - now).total_seconds())))
        if worst is None or lockout.retry_after_seconds > worst.retry_after_seconds:
            worst = lockout
    return worst


def record_failure(username: str, address: str | None) -> None:
    """Remember one failed login for the account and for the address."""
    for key, _limit in _keys(username, address):
        db.session.add(LoginAttempt(key=key))
    db.session.commit()


def clear_failures(username: str) -> None:
    """Forget an account's failures after a successful login; the address count stays."""
    key = _keys(username, None)[0][0]
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.key == key))
    db.session.commit()


def prune_expired() -> int:
    """Delete attempts older than the window so the table does not grow without bound."""
    since = utcnow() - timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
    result = db.session.execute(delete(LoginAttempt).where(LoginAttempt.created_at <= since))
    db.session.commit()
    return result.rowcount or 0
