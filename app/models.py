"""Database models: accounts, and the counters that throttle password guessing."""

from __future__ import annotations

from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import DateTime, String, bindparam, select
from sqlalchemy.orm import Mapped, mapped_column

from app import passwords
from app.extensions import db, login_manager, realtime
from flask_tidings.quickread import QuickRead

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


def parse_session_id(session_id: str) -> tuple[int, int] | None:
    """``"<user id>.<session version>"`` (what ``User.get_id`` wrote) as numbers, or None."""
    user_id, _, version = session_id.partition(".")
    try:
        return int(user_id), int(version)
    except ValueError:
        return None


def session_holds(active: bool, current_version: int, session_version: int) -> bool:
    """Whether a session of this version still logs its user in.

    Signed cookies cannot be recalled, so a logout or deactivation bumps the version instead:
    every earlier cookie, copied or not, stops working at once rather than at its expiry.
    """
    return bool(active) and current_version == session_version


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """``"<user id>.<session version>"`` from the session or remember-me cookie."""
    ids = parse_session_id(session_id)
    if ids is None:
        return None
    user = db.session.get(User, ids[0])
    if user is None or not session_holds(user.active, user.session_version, ids[1]):
        return None
    return user


_users = User.__table__.c
#: What a socket handshake needs of a user: who it is, and whether the session still holds. Run
#: on the DBAPI cursor (flask_tidings/quickread.py): a reconnect storm makes thousands a second.
_SESSION_ROW = QuickRead(lambda _: select(
    _users.id, _users.username, _users.role, _users.active, _users.session_version
).where(_users.id == bindparam("id")))


@realtime.session_loader
def session_user(session_id: str) -> dict[str, object] | None:
    """:func:`load_user`'s verdict for a socket handshake, from one query of five columns.

    Building the ORM user (a session, the identity map, the teardown's rollback) cost more than
    the rest of the handshake's checks together, and the socket needs only its id, name and role.
    """
    ids = parse_session_id(session_id)
    if ids is None:
        return None
    rows = _SESSION_ROW.rows(db.engine, {"id": ids[0]})
    if not rows:
        return None
    user_id, username, role, active, version = rows[0]
    if not session_holds(active, version, ids[1]):
        return None
    return {"id": user_id, "username": username, "role": role}
