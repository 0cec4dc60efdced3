"""Bench users and their session cookies, made the fast way but exactly as the site makes them.

Users are bulk-inserted into the server's database with one precomputed password hash (hashing
thousands of scrypt passwords would take minutes). Each socket then presents its own user's
session cookie, signed with the server's SECRET_KEY by Flask's own session interface, with the
keys Flask-Login writes at login (``_user_id``, ``_fresh``, ``_id`` for this client's address and
User-Agent): byte for byte the cookie a real ``POST /auth/login`` would have set.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask
from flask_login.utils import _create_identifier
from sqlalchemy import create_engine, insert, select
from werkzeug.security import generate_password_hash

from app import create_app
from app.config import Config
from app.models import User
from bench.loadgen import USER_AGENT
from tests.support.live import LIVE_SECRET_KEY

_apps: dict[str, Flask] = {}


def signing_app(database_url: str) -> Flask:
    """An app configured like the server under test (same key), used only to sign cookies."""
    if database_url not in _apps:
        config = Config()
        config.SECRET_KEY = LIVE_SECRET_KEY
        config.SQLALCHEMY_DATABASE_URI = database_url
        _apps[database_url] = create_app(config)
    return _apps[database_url]


def create_users(database_url: str, count: int, prefix: str = "bench") -> list[int]:
    """Insert ``count`` users in one statement; returns their ids."""
    engine = create_engine(database_url)
    password_hash = generate_password_hash("bench-password-1")
    now = datetime.now(UTC)
    rows = [{"username": f"{prefix}{n:05d}", "password_hash": password_hash, "role": "user",
             "active": True, "created_at": now} for n in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(User.__table__), rows)
        ids = conn.execute(select(User.__table__.c.id).where(
            User.__table__.c.username.like(f"{prefix}%")).order_by(User.__table__.c.id)).scalars()
        out = list(ids)
    engine.dispose()
    return out


def session_cookies(database_url: str, user_ids: list[int]) -> dict[int, str]:
    """``user id -> "session=<signed>"`` Cookie header values."""
    app = signing_app(database_url)
    serializer = app.session_interface.get_signing_serializer(app)
    name = app.config["SESSION_COOKIE_NAME"]
    with app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"},
                                  headers={"User-Agent": USER_AGENT}):
        identifier = _create_identifier()
    return {uid: f"{name}=" + serializer.dumps({"_user_id": f"{uid}.0", "_fresh": True,
                                                "_id": identifier})
            for uid in user_ids}
