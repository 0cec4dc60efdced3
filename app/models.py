"""Database models: accounts and the login attempts that throttle password guessing."""

from __future__ import annotations

from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

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
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    active: Mapped[bool] = mapped_column(default=True)
    #: Part of every session and remember-me cookie: bumping it (logout, deactivation) makes
    #: every copy of every earlier cookie worthless, on every device, at once.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def set_password(self, password: str) -> None:
        # werkzeug's default method is scrypt; the hash embeds its parameters, so it can change later.
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

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


class LoginAttempt(db.Model):
    """One failed login, keyed by ``account:<name>`` or ``address:<ip>``.

    Stored in the database rather than process memory so the limit holds across gunicorn workers.
    """

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_key_created_at", "key", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
