"""Unbound extension objects, bound to an application in ``register_extensions``.

Keeping them here (rather than in ``app/__init__.py``) lets models, blueprints and CLI commands
import them without importing the factory, which avoids circular imports.
"""

import sqlite3

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

from flask_tidings import Realtime


class Base(DeclarativeBase):
    """Declarative base so models use SQLAlchemy 2 typed ``Mapped`` columns."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
#: The realtime layer: sockets at /ws, notify/broadcast/publish from anywhere.
realtime = Realtime()


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection, _record) -> None:
    """SQLite, the embedded default, shared by several processes (workers, CLI, cron).

    WAL lets readers run while one process writes; synchronous=NORMAL (safe in WAL mode against
    a crashed process) drops the fsync from every commit, which is most of a publish's latency;
    a busy timeout makes a writer wait for the lock instead of failing with "database is locked".
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        # First, so that switching to WAL already waits for a lock another process holds.
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


#: SQLite's primary result code for "attempt to write a readonly database" and its variants.
SQLITE_READONLY = 8


@event.listens_for(Engine, "handle_error")
def _discard_read_only_sqlite_connections(context) -> None:
    """A SQLite connection opened while the database file was read-only stays read-only for
    good: SQLite opened the file without write access and never reopens it. pool_pre_ping
    cannot tell (a SELECT works), so once the file is writable again every pooled connection
    would keep failing until a restart. Treat the error as a disconnect instead: SQLAlchemy
    then discards this connection and every other one opened before it, and the next checkout
    opens the file afresh, with write access if it now has it.
    """
    error = context.original_exception
    if isinstance(error, sqlite3.Error) and (
        getattr(error, "sqlite_errorcode", 0) & 0xFF == SQLITE_READONLY
    ):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = True
