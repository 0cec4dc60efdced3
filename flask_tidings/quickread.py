"""Small reads on the hot path of a handshake, run on the pool's DBAPI connection directly.

Every subscribe reads the heads of its streams, and a reconnect storm does it thousands of times
a second. Through SQLAlchemy's ``Connection.execute`` one such read cost ~60 µs of CPU (cache key,
execution context, result object), on the DBAPI cursor ~20 µs for the same query, same pool
(issue 18: measured alone on SQLite; in a busy worker every step costs 2.5-6x that).

Assumptions, which the callers keep:

- the statement only reads (nothing to commit; the pool's reset on return rolls back);
- its parameters and columns need no type processing (strings and integers);
- an ``IN`` list has a fixed length per compiled shape: the caller pads it (store.padded), so
  a connection prepares few statements.

What ``Connection.execute`` would have done on an error is kept where it matters: the DBAPI
error is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (callers and the site's
error handlers see the usual exceptions), and the connection is dropped from the pool rather
than handed out again, so a connection the database killed is not reused (the pool's
pre-ping, where configured, still checks the others).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select


class QuickRead:
    """``build(size)`` returns the select for ``size`` values of its one list parameter
    (``size`` is ignored by a statement without one); each is compiled once per dialect."""

    def __init__(self, build: Callable[[int], Select[Any]]):
        self._build = build
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, int], tuple[str, Sequence[str] | None]] = {}

    def _shape(self, engine: Engine, size: int) -> tuple[str, Sequence[str] | None]:
        dialect = engine.dialect
        key = (dialect.name + "+" + dialect.driver, size)
        shape = self._compiled.get(key)
        if shape is None:
            compiled = self._build(size).compile(dialect=dialect)
            order = list(compiled.positiontup or ()) if dialect.positional else None
            shape = (compiled.string, order)
            with self._lock:
                self._compiled[key] = shape
        return shape

    def rows(self, engine: Engine, params: dict[str, Any], size: int = 0) -> list[Any]:
        sql, order = self._shape(engine, size)
        args: Any = tuple(params[name] for name in order) if order is not None else params
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, args)
                return cursor.fetchall()
            finally:
                cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            raw.invalidate(exc)
            raise DBAPIError.instance(
                sql, args, exc, engine.dialect.loaded_dbapi.Error, dialect=engine.dialect
            ) from exc
        finally:
            raw.close()
