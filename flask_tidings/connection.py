"""One client socket: a single writer, a bounded outbox, and exact per-stream cursors.

Three kinds of thread touch a connection, and this class is what keeps them honest:

- the reactor (one per process) reads the socket and flushes whatever could not be written at once;
- the dispatcher (whoever fans an event out: the in-process broker's thread, the Redis listener)
  calls :meth:`offer`, which writes without ever blocking: a non-blocking ``send`` or, if the
  kernel buffer is full, an append to the outbox; past the outbox limit the client is cut off
  with close code 4008 and resumes from its cursor when it reconnects;
- a command thread (a small pool per worker) runs this client's commands and catch-up reads from
  the durable log, one at a time per connection; it may wait on the database but never on a
  socket: a catch-up that finds the outbox half full pauses and resumes when the reactor drains.

Every write happens under ``self.lock``, so frames never interleave, and the order of frames is
the order in which writers took the lock.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from . import frames
from .cursor import Step, StreamCursor
from .inbound import Action, InboundLimits, InboundMeter, TokenBucket
from .messages import pong_frame

if TYPE_CHECKING:
    from wsproto import WSConnection

    from .reactor import Reactor

log = logging.getLogger("tidings.realtime")

_ids = itertools.count(1)
_process_tag: tuple[int, str] = (0, "")

#: Close codes this layer sends; docs/protocol.md explains what a client should do with each.
#: (1008, 1009 and 4029, for what a client sends, are the inbound meter's: see inbound.py.)
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
INTERNAL_ERROR = 1011
SLOW_CONSUMER = 4008
SIGNED_OUT = 4001

#: Bytes read from one socket per reactor pass, at most.
READ_BYTES = 65536
#: Frames handled for one socket per reactor pass, at most: the rest waits for the next pass,
#: after every other socket has had its share, and the socket is not read meanwhile.
FRAMES_PER_PASS = 64
#: Seconds a connection waits for the client's close reply after our close frame, at most.
CLOSE_WAIT = 2.0
#: Frames parsed after our close frame at most, looking for the client's close reply: a client
#: that answers has at most a few messages in flight before it; a flooder never answers, and
#: parsing its frames for the whole close wait cost a worker three times its idle CPU. Past
#: them the socket is not read at all (see :attr:`Connection.deaf`).
FRAMES_AFTER_CLOSE = FRAMES_PER_PASS


def process_tag() -> str:
    """A random tag for this process, the same for all its connections.

    Connection ids start with it, so a client (or a test) can tell which of its sockets share a
    worker, while the welcome names neither the host nor the pid. A forked child gets its own.
    """
    global _process_tag
    pid = os.getpid()
    if _process_tag[0] != pid:
        _process_tag = (pid, secrets.token_hex(4))
    return _process_tag[1]


@dataclass
class Identity:
    """Who is on the other end: fixed at the handshake, from the site's login session."""

    user_id: str
    name: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Limits:
    max_message_bytes: int
    outbox_bytes: int
    send_timeout: float
    heartbeat: float
    rate: float
    burst: int
    flood_close_after: int
    max_fragments: int = 32
    message_timeout: float = 10.0
    restart_rate: float = 250.0
    restart_window: float = 30.0

    def inbound(self) -> InboundLimits:
        return InboundLimits(
            max_message_bytes=self.max_message_bytes,
            max_fragments=self.max_fragments,
            message_timeout=self.message_timeout,
            rate=self.rate,
            burst=self.burst,
            flood_close_after=self.flood_close_after,
        )


#: A batch (:meth:`Connection.batched`) is sent at once when it holds this much: small replies
#: are grouped, but a catch-up's events reach the kernel as they are read, as without a batch.
BATCH_BYTES = 64 * 1024


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        ws: WSConnection,
        identity: Identity,
        limits: Limits,
        reactor: Reactor,
        budget: TokenBucket | None = None,
    ):
        self.id = f"{process_tag()}-{next(_ids)}"
        self.sock = sock
        self.ws = ws
        self.identity = identity
        self.limits = limits
        self.reactor = reactor
        self.opened_at = time.time()

        self.lock = threading.Lock()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._out_since = 0.0
        self._partial = False
        #: Open :meth:`batched` blocks, and whether the outermost one sends at its end.
        self._corked = 0
        self._cork_sends = False
        self.writable = True
        self.closing = False  # we sent a close frame and wait for the client's (or the deadline)
        self.peer_closed = False  # the client sent its close frame (or went away)
        self.broken = False  # the socket failed; nothing more can be written
        self.close_deadline = 0.0
        self.close_code: int | None = None
        self.close_reason = ""
        self.streams: dict[str, StreamCursor] = {}

        self._commands: deque[Any] = deque()
        self._commands_lock = threading.Lock()
        self._scheduled = False
        #: Called (once per idle-to-busy change) to get :meth:`pop_command` drained by a thread.
        self.schedule: Callable[[Connection], None] = lambda conn: None
        #: Called once the connection is over (reactor thread).
        self.on_finished: Callable[[Connection], None] = lambda conn: None
        self._paused: set[str] = set()
        self.finished = threading.Event()
        #: The handshake's request keys (cookies ...), to rebuild a request context per command.
        self.environ: dict[str, Any] = {}

        # Reactor-only state.
        self.last_recv = time.monotonic()
        self.meter = InboundMeter(limits.inbound(), self.last_recv, budget)
        #: True while this socket is not read because its commands wait for the pool (set by
        #: the reactor, cleared by the pool thread that brings the queue down, both under
        #: ``_commands_lock``); ``held_since`` says since when.
        self.held = False
        self.held_since = 0.0
        #: Frames already received but not yet handled (the rest of this socket's share).
        self._events: Iterator[Event] | None = None
        self._input_failed = False
        #: Frames parsed since our close frame; past FRAMES_AFTER_CLOSE input is only discarded.
        self._parsed_after_close = 0
        self._deaf = False
        self.next_ping = self.last_recv + limits.heartbeat

        self.delivered = 0

    @property
    def followed(self) -> frozenset[str]:
        """The streams this connection follows now (a copy)."""
        with self.lock:
            return frozenset(self.streams)

    # ------------------------------------------------------------------ writing (any thread)

    def _write_locked(self, data: bytes) -> bool:
        if not self.writable:
            return False
        if self._out or self._corked:
            if self._out_bytes + len(data) > self.limits.outbox_bytes:
                self._cut_off_locked()
                return False
            self._out.append(data)
            self._out_bytes += len(data)
            if self._corked and self._cork_sends and self._out_bytes >= BATCH_BYTES:
                self._send_batch_locked()  # a catch-up's rows: to the kernel as they come
            return True
        return self._send_now_locked(data)

    def _send_batch_locked(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        self._send_now_locked(data)
        # What did not fit is the reactor's to write now; the batch only appends behind it.
        self._cork_sends = not self._out

    def _send_now_locked(self, data: bytes) -> bool:
        """Write ``data`` on the socket with the outbox empty; what does not fit waits there."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.writable = False
            self.broken = True
            self.reactor.finish_soon(self)
            return False
        if sent < len(data):
            self._out.append(data[sent:])
            self._out_bytes = len(data) - sent
            self._partial = sent > 0
            self._out_since = time.monotonic()
            self.reactor.want_write(self)
        return True

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Send what is written meanwhile with one system call when the block ends.

        A handshake's 101 and welcome, and a subscribe's replies (one per stream), were one
        ``send`` each: on a busy worker each cost ~40 µs of CPU, as much as building the message.
        Order is kept: while a batch is open every writer, on any thread, appends to the outbox
        behind it. Batches are short (no waiting inside but a database read).
        """
        with self.lock:
            self._corked += 1
            if self._corked == 1:
                # Ours to send at the end only if nothing was waiting for the reactor before.
                self._cork_sends = not self._out
                if not self._out:
                    self._out_since = time.monotonic()  # not "stalled" while it fills
        try:
            yield
        finally:
            with self.lock:
                self._corked -= 1
                if not self._corked and self._out:
                    # Also after a close written inside the batch: the outbox still goes out.
                    if self._cork_sends and not self._partial and not self.broken:
                        self._send_batch_locked()
                    else:
                        self.reactor.want_write(self)

    def write_raw(self, data: bytes) -> bool:
        """Bytes already framed (the handshake's 101 answer), in order with the rest."""
        with self.lock:
            return self._write_locked(data)

    def send_json(self, message: dict[str, Any]) -> bool:
        """Send a control message (replies, errors) outside any stream's ordering."""
        frame = frames.text(json.dumps(message, separators=(",", ":")))
        with self.lock:
            return self._write_locked(frame)

    def offer(self, stream: str, seq: int | None, frame: bytes) -> bool:
        """One event for a stream this connection follows; True if it was written now."""
        return self.offer_many(stream, ((seq, frame),)) > 0

    def offer_many(self, stream: str, items: Iterable[tuple[int | None, bytes]]) -> int:
        """Events of one stream, in order, from the dispatcher: written with a single send.

        Returns how many were written (or queued) for the client now. Stored events (with a
        sequence number) pass only in sequence: an event already written is dropped, and a gap
        (an earlier event still on its way, or lost by a broker) starts a catch-up from the log,
        which has it — commits of one stream happen in sequence order.
        """
        with self.lock:
            state = self.streams.get(stream)
            if state is None:
                return 0
            out = []
            now = time.monotonic()
            for seq, frame in items:
                if seq is None:
                    out.append(frame)
                    continue
                step = state.offer(seq, now)
                if step is Step.WRITE:
                    out.append(frame)
                elif step is Step.CATCH_UP:
                    self.push_command(("catch_up", stream))
            if not out:
                return 0
            if not self._write_locked(out[0] if len(out) == 1 else b"".join(out)):
                return 0
            self.delivered += len(out)
            return len(out)

    def replay_blocked(self, stream: str) -> bool:
        """True (and the catch-up of ``stream`` paused) while the client has a backlog to read."""
        with self.lock:
            if self._out_bytes > self.limits.outbox_bytes // 2:
                self._paused.add(stream)
                return True
            return False

    def nudge(self, stream: str, head: int) -> None:
        """The log says ``stream`` reached ``head``: catch up if the pushes left us behind.

        A client with bytes still queued is behind because it reads slowly, not because an
        event went missing: reading the log for it would only add to its backlog.
        """
        with self.lock:
            state = self.streams.get(stream)
            if state is not None and (
                state.nudge(head, bool(self._out), time.monotonic()) is Step.CATCH_UP
            ):
                self.push_command(("catch_up", stream))

    def write_stored(self, stream: str, seq: int, frame: bytes) -> str:
        """Write one replayed event in order: "ok", "full" (paused until drained) or "gone"."""
        with self.lock:
            state = self.streams.get(stream)
            if state is None or not self.writable:
                return "gone"
            if self._out_bytes > self.limits.outbox_bytes // 2:
                # Never wait for a client here: the reactor resumes this catch-up once the
                # client has read its backlog (or the send timeout cuts it off).
                self._paused.add(stream)
                return "full"
            if not state.replayed(seq):
                return "ok"
            if self._write_locked(frame):
                state.wrote(seq)
                self.delivered += 1
                return "ok"
            return "gone"

    def finish_catch_up(self, stream: str) -> bool:
        """True when the stream is live again; False when more events arrived meanwhile."""
        with self.lock:
            state = self.streams.get(stream)
            return state is None or state.finish()

    def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` after what is already queued; safe from any thread."""
        with self.lock:
            if not self.writable:
                return
            self.close_code, self.close_reason = code, reason
            self._write_locked(frames.close(code, reason))
            self.writable = False
            self.closing = True
            self.close_deadline = time.monotonic() + CLOSE_WAIT
        self.reactor.finish_soon(self)

    def _cut_off_locked(self) -> None:
        # The client stopped reading. Keep only the tail of a frame already half on the wire (the
        # stream must stay parseable) and queue the close after it: if the client ever reads
        # again it learns why and resumes; if not, the deadline ends the connection.
        keep = [self._out[0]] if self._partial and self._out else []
        close = frames.close(SLOW_CONSUMER, "slow consumer: reconnect and resume")
        self._out = deque([*keep, close])
        self._out_bytes = sum(len(chunk) for chunk in self._out)
        self.writable = False
        self.closing = True
        self.close_code, self.close_reason = SLOW_CONSUMER, "slow consumer"
        self.close_deadline = time.monotonic() + CLOSE_WAIT
        self.reactor.cut_offs += 1
        log.info(
            "socket cut off conn=%s user=%s queued_bytes=%d reason=%s",
            self.id,
            self.identity.user_id,
            self._out_bytes,
            "slow consumer",
        )
        self.reactor.finish_soon(self)

    # ------------------------------------------------------------------ reactor side

    def flush(self) -> bool:
        """Write what the outbox holds; True when it is empty. Reactor thread only."""
        with self.lock:
            while self._out:
                head = self._out[0]
                try:
                    sent = self.sock.send(head)
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    self._out.clear()
                    self._out_bytes = 0
                    self.writable = False
                    self.broken = True
                    return True
                self._out_bytes -= sent
                if sent < len(head):
                    self._out[0] = head[sent:]
                    self._partial = True
                    return False
                self._out.popleft()
                self._partial = False
                self._out_since = time.monotonic()
                if self._paused and self._out_bytes <= self.limits.outbox_bytes // 4:
                    self._resume_paused_locked()
            if self._paused:
                self._resume_paused_locked()
            return True

    def _resume_paused_locked(self) -> None:
        for stream in self._paused:
            self.push_command(("catch_up", stream))
        self._paused.clear()

    def stalled_for(self, now: float) -> float:
        return now - self._out_since if self._out else 0.0

    @property
    def input_pending(self) -> bool:
        """True while frames already received wait for this socket's next share of the reactor."""
        return self._events is not None

    def on_readable(self, budget: int = FRAMES_PER_PASS) -> bool:
        """Handle at most ``budget`` frames; False when the connection is over. Reactor thread only.

        The socket is read only once every frame received before has been handled: a client that
        sends faster than its share is held back by TCP flow control, not by our memory, and
        never by the other clients' time. After our close frame at most ``FRAMES_AFTER_CLOSE``
        frames are parsed (looking for the client's reply); what follows is read and dropped.
        """
        if self._events is None:
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not data:
                return False
            self.last_recv = time.monotonic()
            if self._input_failed or self._deaf:
                return True  # closing: parse nothing more, until the client or the wait ends
            self.ws.receive_data(data)
            self._events = iter(self.ws.events())
        now = time.monotonic()
        for _ in range(budget):
            if len(self._commands) >= self.limits.burst and self._hold():
                return True  # the pool is behind on this client: read on once it catches up
            if self.closing:
                if self._parsed_after_close >= FRAMES_AFTER_CLOSE:
                    # No close reply among them: stop reading (the reactor unwatches the
                    # socket) until the close deadline ends the connection.
                    self._events = None
                    self._deaf = True
                    return True
                self._parsed_after_close += 1
            event = next(self._events, None)
            if event is None:
                self._events = None
                return True
            if isinstance(event, CloseConnection):
                self._events = None  # wsproto parses nothing after a close
                return self._on_close(event)
            if not self.closing and not self.peer_closed:
                self._on_frame(event, now)
        return True

    @property
    def deaf(self) -> bool:
        """True once a client kept sending past :data:`FRAMES_AFTER_CLOSE` frames after our
        close: the reactor stops reading its socket. Reading and dropping what it sent still
        cost a recv per chunk here and a proxy's relaying of every byte for the whole close
        wait; unread, the kernel's buffers fill, TCP flow control stops the sender (and nginx
        stops reading it too), and the flood costs nobody anything until the deadline."""
        return self._deaf

    def input_failed(self) -> None:
        """Handling this socket's input raised: close it with 1011 and read nothing more from it.

        The other sockets of the worker are untouched; the close frame goes out after what is
        already queued, and the reactor's deadline ends the connection if the client stays.
        """
        self._input_failed = True
        self._events = None
        self.close(INTERNAL_ERROR, "internal error")

    def _on_frame(self, event: Event, now: float) -> None:
        if isinstance(event, TextMessage):
            outcome = self.meter.text(event.data, event.frame_finished, event.message_finished, now)
        elif isinstance(event, (Ping, Pong)):
            outcome = self.meter.control(now)
            if outcome.action is Action.PASS and isinstance(event, Ping):
                with self.lock:
                    self._write_locked(frames.pong(event.payload))
                return
        elif isinstance(event, BytesMessage):
            self.close(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
            return
        else:
            return
        if outcome.action is Action.DELIVER:
            # A ping is answered here, not behind the pool's queue (issue 14): already counted
            # by the meter, and pong_frame parses only short messages.
            pong = pong_frame(outcome.text)
            if pong is None:
                self.push_command(outcome.text)
            else:
                with self.lock:
                    self._write_locked(pong)
        elif outcome.action is Action.REFUSE:
            self.send_json(
                {"type": "error", "code": "rate_limited", "message": "too many messages; slow down"}
            )
        elif outcome.action is Action.CLOSE:
            self.close(outcome.code, outcome.reason)

    def _hold(self) -> bool:
        """Stop reading while ``burst`` commands wait: queueing more would only hold memory,
        and refusing them would punish the client for the pool's pace, not its own."""
        with self._commands_lock:
            if len(self._commands) < self.limits.burst:
                return False
            self.held = True
            self.held_since = time.monotonic()
            return True

    def resumed(self, now: float) -> None:
        """The pool caught up and the reactor reads this socket again (reactor thread)."""
        self.meter.held(now - self.held_since)
        self.last_recv = max(self.last_recv, now)

    def check_overdue(self, now: float) -> None:
        """Close a connection that left a message unfinished too long (reactor tick)."""
        if not self.closing and not self.held:
            outcome = self.meter.overdue(now)
            if outcome is not None:
                self.close(outcome.code, outcome.reason)

    def _on_close(self, event: CloseConnection) -> bool:
        if self.closing:
            return False  # the client answered our close
        self.peer_closed = True
        code = event.code
        # 1005/1006 may not be sent on the wire; wsproto reports protocol errors (1002, 1007)
        # as a close event of its own, which we send to the client as our reason.
        if code in (1005, 1006) or code < 1000:
            code = 1000
        self.close(code, event.reason or "")
        return True

    # ------------------------------------------------------------------ session thread side

    def push_command(self, command: Any) -> None:
        with self._commands_lock:
            self._commands.append(command)
            if self._scheduled:
                return
            self._scheduled = True
        self.schedule(self)

    def pop_command(self) -> Any:
        """The next command, or None (and the connection is idle again) when there is none."""
        with self._commands_lock:
            if self._commands and not self.finished.is_set():
                command = self._commands.popleft()
                resume = self.held and len(self._commands) <= self.limits.burst // 2
            else:
                self._commands.clear()
                self._scheduled = False
                command, resume = None, self.held
            if resume:
                self.held = False
        if resume:
            self.reactor.resume_reading(self)
        return command

    def mark_finished(self) -> None:
        """Over: nothing more is written, then ``on_finished`` counts and logs the close, and only
        then is :attr:`finished` set, so whoever waits on it finds the close already recorded
        (a test, or a handshake thread that lost the CPU right after handing the socket over)."""
        with self.lock:
            self.writable = False
            self._paused.clear()
        try:
            self.on_finished(self)
        finally:
            self.finished.set()
