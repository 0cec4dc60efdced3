"""The one I/O thread of a worker process: reads every socket, flushes backlogs, sends heartbeats.

simple-websocket would start a reader thread per socket, and the gunicorn thread that accepted it
would stay busy for the socket's life (two OS threads per socket). Instead the handshake's socket
is handed to this selector loop and the gunicorn thread goes back to serving pages, so an open
socket costs no thread at all. The loop never blocks on a socket: reads and writes are
non-blocking, and a client that stops reading is cut off by the outbox limit or the send timeout
instead of holding anything up.
"""

from __future__ import annotations

import logging
import os
import random
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from . import frames
from .connection import FRAMES_PER_PASS, GOING_AWAY, SLOW_CONSUMER, Connection

log = logging.getLogger("tidings.realtime")

#: Seconds between housekeeping passes (heartbeats, stalled and dead peers).
TICK = 0.5


def restart_window(count: int, rate: float, longest: float) -> float:
    """Seconds over which ``count`` clients of a stopping worker are asked back: ``count / rate``
    (so the new workers see about ``rate`` handshakes a second from them), at most ``longest``."""
    return min(longest, count / rate) if rate > 0 else 0.0


def restart_delays(count: int, window: float, rng: random.Random) -> list[float]:
    """When each of ``count`` clients should come back: one per slot of the window, at a random
    moment within it, the slots shuffled, so they neither herd nor bunch."""
    slots = list(range(count))
    rng.shuffle(slots)
    return [window * (slot + rng.random()) / count for slot in slots]


class Reactor:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._commands: deque[tuple[str, Connection | None]] = deque()
        self._conns: set[Connection] = set()
        self._writing: set[Connection] = set()
        #: Connections with frames received but not yet handled (they wait for their next share).
        self._backlog: set[Connection] = set()
        self.cut_offs = 0
        self.connection_errors = 0
        self.dead_peers = 0
        self.stopping = False
        #: Seconds over which the clients of this stopping worker were asked back.
        self.restart_window = 0.0
        self._random = random.Random()
        self._thread = threading.Thread(target=self._run, name="tidings-reactor", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- called from other threads

    def _command(self, op: str, conn: Connection | None) -> None:
        self._commands.append((op, conn))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def add(self, conn: Connection) -> None:
        conn.sock.setblocking(False)
        self._command("add", conn)

    def want_write(self, conn: Connection) -> None:
        self._command("write", conn)

    def finish_soon(self, conn: Connection) -> None:
        self._command("closing", conn)

    def resume_reading(self, conn: Connection) -> None:
        """The pool ran enough of a held connection's commands: read its socket again."""
        self._command("resume", conn)

    def shutdown(self, wait: float = 1.0) -> None:
        """Close every socket with 1001, each with its own moment to reconnect to a live worker.

        Waits (at most ``wait`` seconds) until the close frames are written, because the process
        may exit right after: the kernel still delivers what was written before the exit.
        """
        self.stopping = True
        self._command("shutdown", None)
        deadline = time.monotonic() + wait
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.02)

    def late_restart_reason(self) -> str:
        """The 1001 reason for a socket that reaches this worker after it began to stop."""
        return frames.restart_reason(self._random.uniform(0.0, self.restart_window))

    # -------------------------------------------------------------- the loop

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK
        while True:
            try:
                # Sockets with frames left over from their last share are served again at once.
                timeout = 0.0 if self._backlog else max(0.0, next_tick - time.monotonic())
                served: set[Connection] = set()
                for key, mask in self._selector.select(timeout):
                    conn = key.data
                    if conn is None:
                        self._drain_wakeups()
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._guarded(self._flush, conn)
                    if mask & selectors.EVENT_READ and conn in self._conns:
                        served.add(conn)
                        self._read(conn)
                for conn in [c for c in self._backlog if c not in served]:
                    self._read(conn)
                while self._commands:
                    self._apply_guarded(*self._commands.popleft())
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + TICK
            except Exception:  # keep serving every other socket whatever one of them did
                log.exception("realtime reactor error")

    def _read(self, conn: Connection) -> None:
        """One share of the loop for one socket: a bounded read and a bounded number of frames."""
        try:
            alive = conn.on_readable(FRAMES_PER_PASS)
        except Exception:
            self._fail(conn)
            return
        if not alive:
            self._finish(conn)
        elif (conn.held or conn.deaf) and conn in self._conns:
            # Not read until the pool catches up (resume_reading), however ready the socket is;
            # a deaf one not again at all (the close deadline ends it).
            self._backlog.discard(conn)
            self._watch(conn)
        elif conn.input_pending and conn in self._conns:
            self._backlog.add(conn)
        else:
            self._backlog.discard(conn)

    def _guarded(self, step: Callable[[Connection], None], conn: Connection) -> None:
        """Run one connection's step; if it raises, only that connection pays (closed, 1011)."""
        try:
            step(conn)
        except Exception:
            self._fail(conn)

    def _apply_guarded(self, op: str, conn: Connection | None) -> None:
        try:
            self._apply(op, conn)
        except Exception:
            if conn is None:
                raise
            self._fail(conn)

    def _fail(self, conn: Connection) -> None:
        # Called while an exception of this one connection is being handled: log it, close the
        # connection with 1011 and carry on with the others (never the whole loop's handler).
        log.exception("realtime connection failed conn=%s", conn.id)
        self.connection_errors += 1
        self._backlog.discard(conn)
        try:
            conn.input_failed()
        except Exception:
            self._finish(conn)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _apply(self, op: str, conn: Connection | None) -> None:
        if op == "add" and conn is not None:
            if self.stopping:
                conn.close(GOING_AWAY, self.late_restart_reason())
            self._conns.add(conn)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            if conn.closing:
                self._apply("closing", conn)
        elif op == "write" and conn is not None and conn in self._conns:
            if conn not in self._writing:
                self._writing.add(conn)
                self._watch(conn)
        elif op == "resume" and conn is not None and conn in self._conns and not conn.held:
            conn.resumed(time.monotonic())
            self._watch(conn)
            self._backlog.add(conn)  # frames parsed before the hold may be waiting
        elif op == "closing" and conn is not None and conn in self._conns:
            self._flush(conn)
        elif op == "shutdown":
            conns = [each for each in self._conns if not each.closing]
            if conns:
                limits = conns[0].limits
                self.restart_window = restart_window(
                    len(conns), limits.restart_rate, limits.restart_window
                )
                delays = restart_delays(len(conns), self.restart_window, self._random)
                for each, delay in zip(conns, delays):
                    each.close(GOING_AWAY, frames.restart_reason(delay))

    def _flush(self, conn: Connection) -> None:
        if conn not in self._conns:
            return
        if conn.flush():
            if conn in self._writing:
                self._writing.discard(conn)
                self._watch(conn)
            # After our own close frame we keep reading until the client's close arrives (or
            # the deadline in _tick): then the TCP close is clean on both sides.
            if conn.peer_closed or conn.broken:
                self._finish(conn)
        elif conn not in self._writing:
            self._writing.add(conn)
            self._watch(conn)

    def _watch(self, conn: Connection) -> None:
        """Ask the selector for what ``conn`` waits for now: input unless it is held or deaf,
        output while its outbox is not empty (neither: not registered at all)."""
        events = (0 if conn.held or conn.deaf else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn in self._writing else 0
        )
        try:
            key = self._selector.get_key(conn.sock)
        except KeyError:
            key = None
        if key is None:
            if events:
                self._selector.register(conn.sock, events, conn)
        elif not events:
            self._selector.unregister(conn.sock)
        elif key.events != events:
            self._selector.modify(conn.sock, events, conn)

    def _finish(self, conn: Connection) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        self._writing.discard(conn)
        self._backlog.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        # The socket is ours alone (see adoption.adopt_socket): shut it down and close it here. A
        # client that never answers must not make anybody linger.
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()
        conn.mark_finished()

    def _tick(self, now: float) -> None:
        for conn in list(self._conns):
            self._guarded(lambda c: self._tick_one(c, now), conn)

    def _tick_one(self, conn: Connection, now: float) -> None:
        if conn.closing:
            if now > conn.close_deadline:
                self._finish(conn)
            return
        stalled = conn.stalled_for(now)
        if stalled > conn.limits.send_timeout:
            with conn.lock:
                conn._cut_off_locked()
            return
        heartbeat = conn.limits.heartbeat
        if now - conn.last_recv > 2 * heartbeat and not conn.held:
            # Two heartbeats without a pong (or anything else): the peer is gone, or stopped
            # reading. Queue a close it would understand if it ever reads, and drop it now.
            self.dead_peers += 1
            with conn.lock:
                conn._write_locked(frames.close(SLOW_CONSUMER, "heartbeat timeout: resume"))
                conn.writable = False
            conn.close_code, conn.close_reason = SLOW_CONSUMER, "heartbeat timeout"
            self._finish(conn)
            return
        conn.check_overdue(now)
        if now >= conn.next_ping:
            conn.next_ping = now + heartbeat
            with conn.lock:
                conn._write_locked(frames.ping())
                conn._write_locked(frames.text('{"type":"hb"}'))
