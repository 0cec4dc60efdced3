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
def load_user(user_id: str) -> User | None:
    try:
        user = db.session.get(User, int(user_id))
    except ValueError:
        return None
    # A deactivated account's existing sessions stop working at once, not at their expiry.
    return user if user is not None and user.active else None
