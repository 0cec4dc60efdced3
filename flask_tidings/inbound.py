"""What one connection's inbound frames cost, and when a client has sent too much: no I/O here.

Every frame a client sends costs the server something (parsing, a pong, a buffered fragment), so
every frame costs a token: text frames and their continuations, pings and pongs alike. A message
being assembled is bounded in bytes (UTF-8 bytes as sent, not characters), in frames and in time,
so an unfinished message can hold neither memory nor attention for long.

The connection feeds :class:`InboundMeter` what wsproto parsed, with the time; the meter answers
what to do. It owns no socket, clock or thread, so its tests go frame by frame without a server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Close codes the meter asks for (docs/protocol.md explains each).
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
FLOOD = 4029


@dataclass(frozen=True)
class InboundLimits:
    """The ``REALTIME_*`` settings that bound what one connection may send."""

    max_message_bytes: int
    max_fragments: int
    message_timeout: float
    rate: float
    burst: int
    flood_close_after: int


class Action(enum.Enum):
    #: Nothing to do: a fragment was kept, or a control frame may be answered as usual.
    PASS = "pass"
    #: A whole message arrived: run it (:attr:`Outcome.text`).
    DELIVER = "deliver"
    #: Over the rate: tell the client its message was refused (once per message).
    REFUSE = "refuse"
    #: Over the rate and already told (the rest of a refused message, a ping): ignore it.
    DROP = "drop"
    #: Enough: close with :attr:`Outcome.code` and :attr:`Outcome.reason`.
    CLOSE = "close"


@dataclass(frozen=True)
class Outcome:
    action: Action
    text: str = ""
    code: int = 0
    reason: str = ""


PASS = Outcome(Action.PASS)
REFUSE = Outcome(Action.REFUSE)
DROP = Outcome(Action.DROP)


def utf8_length(text: str) -> int:
    """Bytes ``text`` took on the wire; ASCII (the usual JSON) needs no encoding to know."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class InboundMeter:
    """One connection's token bucket and the message it is assembling (reactor thread only)."""

    def __init__(self, limits: InboundLimits, now: float):
        self.limits = limits
        self._tokens = float(limits.burst)
        self._refilled = now
        #: Frames refused so far; past ``flood_close_after`` the connection is closed (4029).
        self.refused = 0
        self._parts: list[str] = []
        self._bytes = 0
        self._fragments = 0
        self._started: float | None = None  # when the message being assembled began
        self._discarding = False  # the rest of a refused message
        self._mid_frame = False  # wsproto hands a large frame over in pieces; one frame, one token

    # ------------------------------------------------------------------ frames

    def control(self, now: float) -> Outcome:
        """A ping or a pong arrived: PASS (answer a ping), DROP (out of budget) or CLOSE."""
        overdue = self.overdue(now)
        if overdue is not None:
            return overdue
        if self._take(now):
            return PASS
        return self._refused(tell=False)

    def text(
        self, data: str, frame_finished: bool, message_finished: bool, now: float, backlog: int = 0
    ) -> Outcome:
        """A piece of a text message; ``backlog`` is how many of its messages still wait to run.

        Returns DELIVER with the whole message once its last frame is in, PASS while it is being
        assembled, REFUSE / DROP when the client is over its rate, CLOSE past a bound.
        """
        new_frame = not self._mid_frame
        self._mid_frame = not frame_finished
        if self._started is None:
            self._started = now
        outcome = PASS
        if new_frame:
            self._fragments += 1
            if self._discarding:
                outcome = self._refused(tell=False)
            elif not self._take(now):
                self._discarding = True
                self._parts = []
                outcome = self._refused(tell=True)
            if outcome.action is Action.CLOSE:
                return outcome
        self._bytes += utf8_length(data)
        limits = self.limits
        if self._bytes > limits.max_message_bytes:
            return self._close(MESSAGE_TOO_BIG, f"message over {limits.max_message_bytes} bytes")
        if self._fragments > limits.max_fragments:
            return self._close(POLICY_VIOLATION, f"message in over {limits.max_fragments} frames")
        overdue = self.overdue(now)
        if overdue is not None:
            return overdue
        if not self._discarding:
            self._parts.append(data)
        if not message_finished:
            return outcome
        text = "".join(self._parts)
        discarded = self._discarding
        self._reset()
        if discarded:
            return outcome
        if backlog >= limits.burst:
            # Its earlier messages have not even run yet: refusing is cheaper than queueing.
            return self._refused(tell=True)
        return Outcome(Action.DELIVER, text)

    def overdue(self, now: float) -> Outcome | None:
        """CLOSE if a message has been left unfinished for too long (the reactor asks too)."""
        if self._started is not None and now - self._started > self.limits.message_timeout:
            return self._close(
                POLICY_VIOLATION, f"message unfinished after {self.limits.message_timeout:g}s"
            )
        return None

    @property
    def assembling(self) -> bool:
        """True while a message has begun and not ended."""
        return self._started is not None

    # ------------------------------------------------------------------ internals

    def _take(self, now: float) -> bool:
        limits = self.limits
        self._tokens = min(float(limits.burst), self._tokens + (now - self._refilled) * limits.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refused(self, tell: bool) -> Outcome:
        self.refused += 1
        if self.refused > self.limits.flood_close_after:
            return self._close(FLOOD, "too many messages")
        return REFUSE if tell else DROP

    def _close(self, code: int, reason: str) -> Outcome:
        self._reset()
        return Outcome(Action.CLOSE, code=code, reason=reason)

    def _reset(self) -> None:
        self._parts = []
        self._bytes = 0
        self._fragments = 0
        self._started = None
        self._discarding = False
