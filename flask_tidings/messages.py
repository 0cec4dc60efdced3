"""What a client's built-in messages ask for, read without I/O: ``ping`` and ``subscribe``.

Kept apart from the socket and the command pool so the reactor can answer a ``ping`` itself (a
pool flooded by other clients' commands must not delay a pong, issue 14) and so the rules of a
subscribe (one stream or several, duplicates, bounds) have fast unit tests of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import frames

#: Streams one ``subscribe`` may name. The per-connection cap (commands.MAX_STREAMS) still
#: applies on top; this bounds the work one message can ask for.
MAX_PER_SUBSCRIBE = 200
#: A ``ping`` longer than this is left to the command pool (which answers it the same way): the
#: reactor parses only small messages, so a pong costs it a bounded, tiny amount of work.
PING_BYTES = 256


class BadMessage(ValueError):
    """The message breaks the protocol; ``str(exc)`` is the error's ``message``."""


def valid_ref(ref: Any) -> bool:
    """A ``ref`` is absent, a short string or a number (not a boolean)."""
    return ref is None or (
        isinstance(ref, (str, int)) and not isinstance(ref, bool) and len(str(ref)) <= 64
    )


def pong_frame(text: str) -> bytes | None:
    """The frame answering ``text`` if it is a well-formed ``ping``, else None (the pool's job).

    Cheap by construction: a substring test rejects every other message before any parsing,
    and only messages of at most :data:`PING_BYTES` characters are parsed.
    """
    if len(text) > PING_BYTES or '"ping"' not in text:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "ping":
        return None
    ref = message.get("ref")
    if not valid_ref(ref):
        return None  # the pool answers it with the usual bad_message error
    return frames.text(json.dumps({"type": "pong", "ref": ref}, separators=(",", ":")))


@dataclass(frozen=True)
class Want:
    """One stream a subscribe asks for, and where the client stands in it (None: the head)."""

    stream: str
    after: int | None


def _want(stream: Any, after: Any) -> Want:
    if not isinstance(stream, str) or not 0 < len(stream) <= 200:
        raise BadMessage('"stream" must be a stream name.')
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise BadMessage('"after" must be a non-negative integer.')
    return Want(stream, after)


def subscriptions(message: dict[str, Any]) -> tuple[list[Want], bool]:
    """The streams a ``subscribe`` asks for, and whether it used the several-streams form.

    ``{"stream": "user:7", "after": 41}`` names one; ``{"streams": [{"stream": "user:7",
    "after": 41}, "broadcast"]}`` several (an entry is a name or an object). A stream named twice
    is asked for once, with the first entry's ``after``. Raises :class:`BadMessage` when any
    entry is malformed or there are too many: the whole message is refused, nothing subscribed.
    """
    if "streams" not in message:
        return [_want(message.get("stream"), message.get("after"))], False
    entries = message["streams"]
    if not isinstance(entries, list) or not entries:
        raise BadMessage('"streams" must be a non-empty list of streams.')
    if len(entries) > MAX_PER_SUBSCRIBE:
        raise BadMessage(f"At most {MAX_PER_SUBSCRIBE} streams per subscribe.")
    wants: dict[str, Want] = {}
    for entry in entries:
        if isinstance(entry, dict):
            want = _want(entry.get("stream"), entry.get("after"))
        else:
            want = _want(entry, None)
        wants.setdefault(want.stream, want)
    return list(wants.values()), True
