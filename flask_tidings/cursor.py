"""Where one subscribed stream stands for one connection: the catch-up state machine, no I/O.

Events of a stream are numbered 1, 2, 3 ... in the durable log. A connection writes them to its
client strictly in that order, from two sources that race: live pushes (from the broker's
dispatcher) and reads of the log (catch-up, on a command thread). This class decides, for each
thing that happens, what the connection must do; the connection holds the lock, writes bytes
and queues commands. It owns no socket, clock or thread, so its tests walk through every
interleaving without a server (tests/realtime/test_cursor.py).

``cursor`` is the last sequence number written to the client. While ``catching_up`` the log is
being read and live events only raise ``seen``; when the read is done, ``seen`` is checked again,
so an event that arrived during the read is never skipped. While ``pending`` the start is not
fixed yet (the head was not read; ``subscribed`` is still owed, to ``ref``); ``asked_at`` and
``first_seen`` (the first live event offered meanwhile) let a start "from the head" fixed late
still include what came after the request. ``failed`` means the last read of the log failed: the
next live event, the sweep's nudge or the client's new subscribe retries it (not before
``retry_at``), so a database error never leaves a stream silent for good.
"""

from __future__ import annotations

import enum
import time
from typing import Any

#: Seconds before the first retry of a failed read, doubling up to :data:`RETRY_MAX`.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


class Step(enum.Enum):
    """What the connection must do about what just happened."""

    #: Nothing.
    NONE = "none"
    #: Write this event's frame now.
    WRITE = "write"
    #: Read the log (queue a catch-up command).
    CATCH_UP = "catch_up"


class StreamCursor:
    __slots__ = (
        "cursor", "seen", "catching_up", "pending", "after", "ref", "asked_at", "first_seen",
        "failed", "failures", "retry_at",
    )

    def __init__(
        self, after: int | None = None, ref: Any = None, pending: bool = False,
        asked_at: float | None = None,
    ) -> None:
        self.cursor = 0
        self.seen = 0
        self.catching_up = True
        self.pending = pending
        self.after = after
        self.ref = ref
        self.asked_at = time.time() if asked_at is None else asked_at
        self.first_seen = 0
        self.failed = False
        self.failures = 0
        self.retry_at = 0.0

    # ------------------------------------------------------------------ live pushes

    def offer(self, seq: int, now: float) -> Step:
        """A stored event ``seq`` arrived live (``now``: a monotonic clock, for retries)."""
        if self.catching_up:
            if seq > self.seen:
                self.seen = seq
            if self.pending and not 0 < self.first_seen <= seq:
                self.first_seen = seq
            return self._retry(now)
        if seq == self.cursor + 1:
            self.cursor = seq
            return Step.WRITE
        if seq > self.cursor:
            # A gap: an earlier event is still on its way, or a broker lost it. The log has it.
            return self._catch_up(seq)
        return Step.NONE  # already written

    def nudge(self, head: int, backlog: bool, now: float) -> Step:
        """The log says the stream reached ``head`` (the sweep).

        A client with bytes still queued (``backlog``) is behind because it reads slowly, not
        because an event went missing: reading the log for it would only add to its backlog.
        """
        if self.failed:
            return self._retry(now)
        if not self.catching_up and head > self.cursor and not backlog:
            return self._catch_up(head)
        return Step.NONE

    def _catch_up(self, seen: int) -> Step:
        self.seen = max(self.seen, seen)
        self.catching_up = True
        return Step.CATCH_UP

    def _retry(self, now: float) -> Step:
        if self.failed and now >= self.retry_at:
            self.failed = False
            return Step.CATCH_UP
        return Step.NONE

    # ------------------------------------------------------------------ the catch-up's side

    def resubscribe(self, ref: Any) -> bool:
        """The client asked again; True when that should retry now (a failed or unfinished
        start), the answer then owed to this ``ref``."""
        if not (self.failed or self.pending):
            return False
        self.failed = False
        self.ref = ref
        return True

    def start_at(self, head: int, since: int | None) -> tuple[int, Any] | None:
        """Fix where a pending subscription starts now that ``head`` is known; ``since`` is the
        log's sequence number when the client asked (for a start fixed late). Returns the start
        and the ``ref`` owed a ``subscribed``, or None when it was fixed already."""
        if not self.pending:
            return None
        if self.after is not None:
            start = min(self.after, head)
        else:
            start = head if since is None else min(head, since)
            if self.first_seen:  # live events arrived while the head was unreadable
                start = min(start, self.first_seen - 1)
        self.cursor = start
        self.pending = False
        ref, self.ref = self.ref, None
        return start, ref

    @property
    def needs_since(self) -> bool:
        """A start fixed after a failure must not begin at the then head (see start_at)."""
        return self.pending and self.failures > 0 and self.after is None

    def replayed(self, seq: int) -> bool:
        """An event read from the log: True when it is to be written (it is the next one)."""
        return seq > self.cursor

    def wrote(self, seq: int) -> None:
        self.cursor = seq

    def skipped_to(self, head: int) -> None:
        """The log no longer holds what follows the cursor (retention): resume from ``head``."""
        self.cursor = max(self.cursor, head)

    def finish(self) -> bool:
        """The read reached its end: True when live again, False when more arrived meanwhile."""
        if self.seen > self.cursor:
            return False
        self.catching_up = False
        self.failures = 0
        return True

    def fail(self, now: float) -> tuple[float, bool, Any]:
        """A read of the log failed: back off and wait for a repair. Returns the delay, whether
        to tell the client (once per run of failures, and always for a subscribe still owed an
        answer) and the ``ref`` to answer."""
        self.catching_up = True
        self.failed = True
        self.failures += 1
        delay = min(RETRY_FIRST * 2 ** min(self.failures - 1, 10), RETRY_MAX)
        self.retry_at = now + delay
        tell = self.pending or self.ref is not None or self.failures == 1
        ref, self.ref = self.ref, None
        return delay, tell, ref
