"""One-line ``key=value`` logs of the ``tidings.*`` loggers on stderr, tagged with the worker pid.

gunicorn configures only its own loggers, so the realtime layer's socket lifecycle lines
(``socket open conn=.. user=..``, ``socket close .. code=4008 reason=slow consumer``,
``socket refused: ..``) were dropped. This prints them, one line each, so grep and log shippers
can read them. Only what the code logs is printed: lines carry ids and codes, never the contents
of a user's messages.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import TextIO

from flask import Flask

#: The parent of every logger of the site ("tidings.realtime", ...).
LOGGER = "tidings"


#: A value that needs no quotes: letters, digits and ``-_.:/@+`` (one regex, not a loop per
#: character: a line per socket open and close is on the handshake's path).
_SIMPLE = re.compile(r"[\w\-.:/@+]+")


def _quote(value: str) -> str:
    """A value as one token: bare if it is simple, else double-quoted with escapes."""
    if _SIMPLE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


class KeyValueFormatter(logging.Formatter):
    """``ts=.. level=info logger=tidings.realtime pid=.. event="socket open" conn=.. user=..``.

    The realtime layer writes ``"<event words>[: detail] key=value key=value"``: the leading
    words become ``event`` (and ``detail``), the pairs are kept (values are ids and codes).
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        words: list[str] = []
        pairs: list[str] = []
        for token in message.split(" "):
            if "=" in token and not token.startswith("="):
                pairs.append(token)
            elif pairs:
                # A value with spaces ("reason=slow consumer"): it belongs to the previous pair.
                pairs[-1] += " " + token
            else:
                words.append(token)
        event, _, detail = " ".join(words).partition(":")
        fields = [
            f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
            f".{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"pid={record.process or os.getpid()}",
            f"event={_quote(event.strip())}",
        ]
        if detail.strip():
            # "socket refused: origin https://evil.example" -> event + detail.
            fields.append(f"detail={_quote(detail.strip())}")
        for pair in pairs:
            key, _, value = pair.partition("=")
            fields.append(f"{key}={_quote(value)}")
        if record.exc_info and record.exc_info[0] is not None:
            # One line even for errors: the exception and where it was raised, no traceback.
            exc_type, exc, tb = record.exc_info
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "-"
            fields.append(f"exc={_quote(f'{exc_type.__name__}: {exc}')}")
            fields.append(f"at={_quote(where)}")
        return " ".join(fields)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    marker = "tidings-ops"

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(app: Flask) -> None:
    """Send ``tidings.*`` records at INFO and above to stderr, one ``key=value`` line each.

    Idempotent: the factory runs once per app and tests build many apps in one process.
    A level set beforehand (DEBUG while investigating) is kept.
    """
    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(app.config.get("TIDINGS_LOG_LEVEL", logging.INFO))
    if any(getattr(h, "marker", None) == _StderrHandler.marker for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(KeyValueFormatter())
    logger.addHandler(handler)
