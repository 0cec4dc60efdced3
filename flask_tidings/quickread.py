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

What ``Connection.execute`` would have done on an error is kept where it matters: DBAPI errors
(at checkout too) are raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (callers and
the site's error handlers, such as a 503 for a database that is down, see the usual
exceptions), and a connection the driver reports as lost is dropped from the pool rather than
handed out again; any other error leaves it there (an in-memory SQLite database lives in its
one connection). Not kept: the engine's ``handle_error`` and cursor-execute events, and
``schema_translate_map``; the SQL is compiled once per dialect, driver and paramstyle.
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
        key = (f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}", size)
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
        dialect = engine.dialect
        error = dialect.loaded_dbapi.Error
        try:
            raw = engine.raw_connection()
        except error as exc:
            lost = dialect.is_disconnect(exc, None, None)
            raise DBAPIError.instance(None, None, exc, error, connection_invalidated=lost,
                                      dialect=dialect) from exc
        cursor = None
        try:
            cursor = raw.cursor()
            cursor.execute(sql, args)
            return cursor.fetchall()
        except error as exc:
            lost = dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
            if lost:
                raw.invalidate(exc)
            raise DBAPIError.instance(sql, args, exc, error, hide_parameters=engine.hide_parameters,
                                      connection_invalidated=lost, dialect=dialect) from exc
        finally:
            if cursor is not None:
                try:
                    cursor.close()
                except error:
                    pass
            raw.close()
