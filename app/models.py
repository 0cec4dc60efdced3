"""Database models: accounts, and the counters that throttle password guessing."""

from __future__ import annotations

from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app import passwords
from app.extensions import db, login_manager

#: The roles an account may have; admins see the Admin area.
ROLES = ("user", "admin")


def utcnow() -> datetime:
    """Timezone-aware now, so PostgreSQL and SQLite rows compare the same way."""
    return datetime.now(UTC)


class User(UserMixin, db.Model):
    """A person who can log in."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: Optional; only used to send password reset links.
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    active: Mapped[bool] = mapped_column(default=True)
    #: Part of every session and remember-me cookie: bumping it (logout, deactivation) makes
    #: every copy of every earlier cookie worthless, on every device, at once.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: None until the first login, so the first one can say "Welcome" and later ones "Welcome back".
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def set_password(self, password: str) -> None:
        # werkzeug's default method is scrypt; the hash embeds its parameters, so it can change
        # later. Computed at low CPU priority (app/passwords.py).
        self.password_hash = passwords.hash_password(password)

    def check_password(self, password: str) -> bool:
        return passwords.check_password(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:
        # flask-login refuses to log in (and to load) inactive users: deactivation locks them out.
        return self.active

    def get_id(self) -> str:
        return f"{self.id}.{self.session_version}"

    def end_sessions(self) -> None:
        """Revoke every session of this user (the caller commits)."""
        self.session_version = (self.session_version or 0) + 1

    def __repr__(self) -> str:
        return f"<User {self.username!r} {self.role}>"


class LoginThrottle(db.Model):
    """A failure counter for one key: ``pair:<account>|<address>``, ``address:<ip>``,
    ``account:<name>``, ``register:<ip>`` or ``reset:<ip>``.

    Stored in the database rather than process memory so a limit holds across gunicorn
    workers; one row per key, changed only under a row lock (app/auth/throttle.py), so
    concurrent requests cannot all pass a check before any of them counts. A counter is
    forgotten (and its row pruned) a window after its last failure.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True)


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """``"<user id>.<session version>"`` from the session or remember-me cookie."""
    user_id, _, version = session_id.partition(".")
    try:
        user = db.session.get(User, int(user_id))
        version_number = int(version)
    except ValueError:
        return None
    # Signed cookies cannot be recalled, so a logout or deactivation bumps the version instead:
    # every earlier cookie, copied or not, stops working at once rather than at its expiry.
    if user is None or not user.active or user.session_version != version_number:
        return None
    return user
