"""What one connection's inbound frames cost, and when a client has sent too much: no I/O here.

Every frame a client sends costs the server something (parsing, a pong, a buffered fragment), so
every frame costs a token: text frames and their continuations, pings and pongs alike. A message
being assembled is bounded in bytes (UTF-8 bytes as sent, not characters), in frames and in time,
so an unfinished message can hold neither memory nor attention for long.

The per-socket rate alone lets one user with 20 tabs send 20 times that rate, so the commands of
all one user's sockets in a worker also spend from one shared :class:`TokenBucket`. Only the
client's sending decides: a frame is timed when the reactor reads it, never refused because the
command pool is behind. A socket whose commands pile up is not read (TCP holds the client back)
until the pool catches up, and that wait is credited back to it (:meth:`InboundMeter.held`).

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
#: Seconds of unread time a socket's credit covers at most (see :meth:`TokenBucket.credit`).
CREDIT_SECONDS = 60.0


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


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; used by the reactor thread only.

    Every socket of a worker is read by its one reactor, so a bucket shared by one user's
    sockets needs no lock.
    """

    __slots__ = ("rate", "burst", "_tokens", "_refilled", "_credit")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = now
        self._credit = 0.0  # tokens beyond the cap, for time the socket was not read (held)

    def take(self, now: float) -> bool:
        """Spend one token if there is one (the saved-up ones first, then any credit)."""
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def credit(self, seconds: float) -> None:
        """What the rate allowed over ``seconds`` the socket went unread, on top of the cap.

        Credit adds up over holds (one backlog is often read across several), up to a minute of
        the rate: a client can have no more than that waiting in TCP's buffers anyway.
        """
        self._credit = min(self._credit + max(0.0, seconds) * self.rate, CREDIT_SECONDS * self.rate)


class InboundMeter:
    """One connection's token bucket and the message it is assembling (reactor thread only).

    ``shared``, if given, is the bucket all the user's sockets in this worker spend from for
    each whole message (a command); pings and fragments cost only this socket's tokens.
    """

    def __init__(self, limits: InboundLimits, now: float, shared: TokenBucket | None = None):
        self.limits = limits
        self._bucket = TokenBucket(limits.rate, limits.burst, now)
        self._shared = shared
        #: Frames refused so far; past ``flood_close_after`` the connection is closed (4029).
        self.refused = 0
        #: Messages refused because the user's shared budget was spent (not in ``refused``).
        self.refused_shared = 0
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

    def text(self, data: str, frame_finished: bool, message_finished: bool, now: float) -> Outcome:
        """A piece of a text message.

        Returns DELIVER with the whole message once its last frame is in, PASS while it is being
        assembled, REFUSE / DROP when the client (or its user) is over the rate, CLOSE past a
        bound.
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
        if self._shared is not None and not self._shared.take(now):
            # Within this socket's rate, but the user's sockets together are over theirs. Told,
            # not counted towards 4029: this socket kept to its rate, and a refusal costs the
            # reactor microseconds where a close would cost a reconnect and a handshake.
            self.refused_shared += 1
            return REFUSE
        return Outcome(Action.DELIVER, text)

    def held(self, seconds: float) -> None:
        """The reactor did not read this socket for ``seconds`` while its commands waited for
        the pool: frames sent meanwhile at the allowed rate are read all at once now, and must
        not be refused for it, nor a message it was sending become overdue."""
        self._bucket.credit(seconds)
        if self._started is not None:
            self._started += seconds

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
        return self._bucket.take(now)

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
