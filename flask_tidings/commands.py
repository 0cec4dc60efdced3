"""Client commands, run on a small thread pool: subscribe, catch-up from the log, site handlers.

A connection's commands run one at a time and in order (it is scheduled on the pool only while
it has work), and one user's connections take at most :data:`PER_USER` of the pool's threads at
once: a user with many sockets waits for their own turn, not everybody else's. A site handler
runs inside a request context rebuilt from the handshake, so it sees ``current_user``,
``request`` and a fresh database session exactly as in a view. The built-in commands need none
of that (the identity was fixed at the handshake), and rebuilding one costs a session cookie
decode and a user load per command: they run without it, and site authorizers they call run in
an app context. ``ping`` never gets here: the reactor answers it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from flask import has_app_context

from . import frames
from .connection import Connection
from .cursor import StreamCursor
from .messages import BadMessage, Want, subscriptions, valid_ref

if TYPE_CHECKING:
    from .extension import Realtime, RealtimeState

log = logging.getLogger("tidings.realtime")

#: Streams one connection may follow at once.
MAX_STREAMS = 200
#: Commands one connection runs before yielding its pool thread to the others. Small: one user
#: flooding commands over 20 sockets kept another user's ping waiting behind 32 of theirs per
#: turn (bench.attacks, "mark-read-20": round trip p50 365 ms; 35 ms with a batch of 1).
BATCH = 2
#: Connections of one user whose commands run at the same time; the user's other connections
#: with work wait in a queue of their own, served in turn. One user's 16 sockets each sending a
#: chat message at the same instant had 16 pool threads storing and fanning out at once, all
#: taking turns on the GIL with the pages of everyone else (bench.attacks, "chat-burst":
#: another user's page p99 13 -> 37-41 ms in two runs of three). The price, accepted: a user's
#: own long commands (a catch-up of thousands of events, a site handler that blocks) hold that
#: user's other tabs back, never anyone else's.
PER_USER = 2
#: Seconds of clock disagreement tolerated when a late subscribe looks up where a stream stood.
CLOCK_MARGIN = 1.0
#: Commands of the layer itself: they run without a request context (see the module docstring).
BUILT_IN = frozenset({"subscribe", "unsubscribe", "ping"})


class CommandRunner:
    def __init__(self, ext: Realtime, state: RealtimeState, threads: int):
        self.ext = ext
        self.state = state
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="tidings-command")
        self.closed = False
        self._turns = threading.Lock()
        #: Per user: connections on the pool now, and connections with work waiting for a turn.
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[Connection]] = {}

    def schedule(self, conn: Connection) -> None:
        """``conn`` has work: run it now, or after its user's other connections (``PER_USER``)."""
        user = conn.identity.user_id
        with self._turns:
            running = self._running.get(user, 0)
            if running >= PER_USER:
                self._waiting.setdefault(user, deque()).append(conn)
                return
            self._running[user] = running + 1
        self._submit(self._run, conn)

    def _turn_over(self, conn: Connection, more: bool) -> None:
        """``conn`` leaves its pool thread (``more``: with work left): the thread goes to the
        user's next waiting connection, ``conn`` queueing behind it, or back to the pool."""
        user = conn.identity.user_id
        with self._turns:
            waiting = self._waiting.get(user)
            if more:
                if waiting is None:
                    waiting = self._waiting[user] = deque()
                waiting.append(conn)
            following = waiting.popleft() if waiting else None
            if waiting is not None and not waiting:
                del self._waiting[user]
            if following is None:
                running = self._running.get(user, 1) - 1
                if running > 0:
                    self._running[user] = running
                else:
                    self._running.pop(user, None)
        if following is not None:
            try:
                self._submit(self._run, following)
            except RuntimeError:
                # The pool is gone (the interpreter is exiting): nothing will run it.
                log.warning("realtime command pool gone; conn=%s not run", following.id)

    def _submit(self, fn: Any, conn: Connection) -> None:
        """Queue work for the pool, unless the worker is on its way out: :func:`gunicorn.leave`
        shuts the pool down while the reactor may still read a client's last frames (its
        sockets already have their 1001). Those commands are dropped; that is not an error of
        the reactor's loop, which used to log one per exit."""
        if self.closed:
            log.debug("realtime command dropped at exit conn=%s", conn.id)
            return
        try:
            self.pool.submit(fn, conn)
        except RuntimeError:
            if not self.closed:  # shut down between the check and the submit, or not ours
                raise

    def shutdown(self, cancel: bool = False) -> None:
        """Take no more work; what is queued still runs unless ``cancel``, including the
        connections waiting for their user's turn (handed to the pool now, turns or not: a chat
        message queued behind a user's other tab is stored before the worker leaves)."""
        with self._turns:
            waiting = [conn for queue in self._waiting.values() for conn in queue]
            self._waiting.clear()
        if not cancel:
            for conn in waiting:
                try:
                    self.pool.submit(self._run, conn)
                except RuntimeError:
                    break  # shut down already
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=cancel)

    def _run(self, conn: Connection) -> None:
        more = False
        try:
            for _ in range(BATCH):
                command = conn.pop_command()
                if command is None:
                    return
                try:
                    _handle(self.ext, self.state, conn, command)
                except Exception:
                    log.exception("realtime command failed conn=%s", conn.id)
                    conn.send_json(
                        {
                            "type": "error",
                            "code": "server_error",
                            "message": "The server could not handle that message.",
                        }
                    )
            more = True  # BATCH run and maybe more queued: take turns (pop_command will say)
        finally:
            # More waiting: requeue behind the others (this user's first, then the pool's).
            self._turn_over(conn, more)

    def finished(self, conn: Connection) -> None:
        """The reactor ended ``conn``: forget it and run the disconnect hooks (off its thread)."""
        state = self.state
        state.hub.remove(conn)
        state.closed += 1
        code = str(conn.close_code or "peer")
        state.close_codes[code] = state.close_codes.get(code, 0) + 1
        log.info(
            "socket close conn=%s user=%s worker=%s code=%s reason=%s",
            conn.id,
            conn.identity.user_id,
            state.worker,
            conn.close_code,
            conn.close_reason or "-",
        )
        if self.ext._disconnect_hooks:
            self._submit(self._disconnect_hooks, conn)

    def _disconnect_hooks(self, conn: Connection) -> None:
        from .views import safe_hook

        with self.state.app.request_context(_environ(conn)):
            for hook in self.ext._disconnect_hooks:
                safe_hook(hook, conn)


def _environ(conn: Connection) -> dict[str, Any]:
    environ = dict(conn.environ)
    environ.update(
        {
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
    )
    return environ


def _error(conn: Connection, code: str, message: str, ref: Any = None) -> None:
    reply: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        reply["ref"] = ref
    conn.send_json(reply)


def _handle(ext: Realtime, state: RealtimeState, conn: Connection, command: Any) -> None:
    if isinstance(command, tuple):
        catch_up(state, conn, command[1])
        return
    try:
        message = json.loads(command)
    except ValueError:
        _error(conn, "bad_json", "Messages must be JSON text.")
        return
    if not isinstance(message, dict):
        _error(conn, "bad_message", 'A message is a JSON object with a string "type".')
        return
    ref = message.get("ref")
    if not valid_ref(ref):
        _error(conn, "bad_message", '"ref" must be a short string or number.')
        return
    if not isinstance(message.get("type"), str):
        _error(conn, "bad_message", 'A message is a JSON object with a string "type".', ref)
        return
    try:
        if message["type"] in BUILT_IN:
            _dispatch(ext, state, conn, message, ref)
        else:
            with state.app.request_context(_environ(conn)):
                _dispatch(ext, state, conn, message, ref)
    except Exception:
        log.exception("realtime command %r failed conn=%s", message["type"][:40], conn.id)
        _error(conn, "server_error", "The server could not handle that message.", ref)


def _dispatch(
    ext: Realtime, state: RealtimeState, conn: Connection, message: dict[str, Any], ref: Any
) -> None:
    kind = message["type"]
    if kind == "subscribe":
        try:
            wants, several = subscriptions(message)
        except BadMessage as exc:
            _error(conn, "bad_message", str(exc), ref)
            return
        # Its replies (one per stream) and any catch-up leave in one send.
        with conn.batched():
            subscribe_many(ext, state, conn, wants, ref, several)
    elif kind == "unsubscribe":
        stream = message.get("stream")
        if isinstance(stream, str) and stream in conn.streams:
            state.hub.unsubscribe(conn, stream)
            with conn.lock:
                conn.streams.pop(stream, None)
        conn.send_json({"type": "unsubscribed", "stream": stream, "ref": ref})
    elif kind == "ping":
        conn.send_json({"type": "pong", "ref": ref})
    elif kind in ext._handlers:
        from .extension import RealtimeError

        try:
            result = ext._handlers[kind](conn, message.get("data"))
        except RealtimeError as exc:
            _error(conn, exc.code, exc.message, ref)
            return
        conn.send_json({"type": "reply", "ref": ref, "data": result})
    else:
        _error(conn, "unknown_type", f"Unknown message type {kind[:40]!r}.", ref)


def subscribe_many(
    ext: Realtime,
    state: RealtimeState,
    conn: Connection,
    wants: list[Want],
    ref: Any,
    several: bool,
) -> None:
    """Follow ``wants``: each is answered on its own (``subscribed`` or an error naming it, all
    with ``ref``), and the heads of the new ones are read with one query, not one each.

    A stream refused (forbidden, over the cap) costs the others nothing. Every new stream is
    registered (hub and cursor) before the heads are read, so no live event can slip between
    the two; a failed read leaves each new stream marked ``failed`` and repairable, exactly as
    a single subscribe's would (see :func:`catch_up`).
    """
    allowed = _allowed(ext, state, conn, [want.stream for want in wants])
    fresh: list[str] = []
    retries: list[str] = []
    for want in wants:
        stream = want.stream
        if not allowed[stream]:
            _stream_error(conn, "forbidden", f"You may not follow {stream[:80]!r}.", ref,
                          stream if several else None)
            continue
        with conn.lock:
            current = conn.streams.get(stream)
            # Asked again after an error: try now, and answer this ref when it works.
            retry = current is not None and current.resubscribe(ref)
            cursor = current.cursor if current is not None else 0
            full = current is None and len(conn.streams) >= MAX_STREAMS
            if current is None and not full:
                # Registered before the head is read: until the catch-up is done, live events
                # only raise "seen".
                conn.streams[stream] = StreamCursor(after=want.after, ref=ref, pending=True)
        if retry:
            retries.append(stream)
        elif current is not None:
            conn.send_json({"type": "subscribed", "stream": stream, "ref": ref, "after": cursor})
        elif full:
            _stream_error(conn, "too_many_streams", f"At most {MAX_STREAMS} streams per "
                          "connection.", ref, stream if several else None)
        else:
            fresh.append(stream)
    for stream in retries:
        catch_up(state, conn, stream)
    if not fresh:
        return
    state.hub.subscribe_many(conn, fresh)
    try:
        heads = state.store.heads(fresh) if len(fresh) > 1 else None
    except Exception as exc:
        for stream in fresh:
            _read_failed(conn, stream, exc)
        return
    for stream in fresh:
        catch_up(state, conn, stream, None if heads is None else heads.get(stream, 0))


def _allowed(
    ext: Realtime, state: RealtimeState, conn: Connection, streams: list[str]
) -> dict[str, bool]:
    """Who may follow what; a site's authorizer (it may query the database) gets an app
    context, which costs far less than the request context this path no longer builds."""
    if has_app_context() or not any(ext.needs_authorizer(stream) for stream in streams):
        return {stream: ext.can_follow(conn.identity, stream) for stream in streams}
    with state.app.app_context():
        return {stream: ext.can_follow(conn.identity, stream) for stream in streams}


def _stream_error(conn: Connection, code: str, message: str, ref: Any, stream: str | None) -> None:
    reply: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if stream is not None:
        reply["stream"] = stream  # a subscribe of several streams: which one this is about
    if ref is not None:
        reply["ref"] = ref
    conn.send_json(reply)


def catch_up(
    state: RealtimeState, conn: Connection, stream: str, head: int | None = None
) -> None:
    """Write every stored event after the connection's cursor, then go live again.

    Any failure (the database refused a read) leaves the stream marked ``failed`` with a retry
    time: the next live event, the sweep's next nudge or the client's next subscribe runs this
    again, from where it stopped. The client is told with an ``unavailable`` error naming the
    stream (with the ``ref`` of a subscribe still waiting for its answer), so it may retry too.
    ``head``: the stream's head, already read (a subscribe of several streams reads them all in
    one query) for a subscription still pending.
    """
    try:
        _catch_up(state, conn, stream, -1 if head is None else head)
    except Exception as exc:
        _read_failed(conn, stream, exc)


def _read_failed(conn: Connection, stream: str, exc: Exception) -> None:
    """A read of ``stream``'s log failed: mark it for a retry and tell the client."""
    with conn.lock:
        stream_state = conn.streams.get(stream)
        if stream_state is None:
            return
        # The client is told too (see StreamCursor.fail): it may retry, as realtime.js does.
        delay, tell, ref = stream_state.fail(time.monotonic())
    log.warning(
        "realtime catch-up failed conn=%s stream=%s (%s: %s); retrying in %.1fs",
        conn.id, stream, type(exc).__name__, str(exc).splitlines()[0][:200], delay,
    )
    if tell:
        reply: dict[str, Any] = {
            "type": "error",
            "code": "unavailable",
            "stream": stream,
            "message": "The server could not read this stream just now; it keeps trying.",
        }
        if ref is not None:
            reply["ref"] = ref
        conn.send_json(reply)


def _catch_up(state: RealtimeState, conn: Connection, stream: str, known_head: int) -> None:
    """Stops early when the client's outbox is half full; the reactor queues the catch-up again
    once the client has read its backlog. A head just read spares the query for a client that is
    already up to date (most subscribes)."""
    page = int(state.config["REPLAY_PAGE"])
    head = -1
    while not conn.finished.is_set():
        stream_state = conn.streams.get(stream)
        if stream_state is None:
            return
        if stream_state.pending:
            if known_head >= 0 and not stream_state.needs_since:
                head, known_head = known_head, -1
            else:
                head = state.store.head(stream)
            since = None
            if stream_state.needs_since:
                # Late: start where the stream stood when the client asked, not where it
                # stands now, or what was published in between would be skipped. A little
                # earlier, because clocks of two hosts (or one stepped clock) disagree: a
                # client with no cursor may see an event from just before it asked, never
                # miss one from after.
                since = state.store.seq_at(stream, stream_state.asked_at - CLOCK_MARGIN)
            started = _start(conn, stream, head, since)
            if started is None:
                return
            start, ref = started
            conn.send_json(
                {"type": "subscribed", "stream": stream, "head": head, "after": start, "ref": ref}
            )
        if conn.replay_blocked(stream):
            return
        cursor = stream_state.cursor
        if cursor >= head >= 0:
            head = -1
            if _finish(conn, stream):
                return
            continue  # events arrived while subscribing: read them
        # Sampled before the read: an event seen live (or counted in a head just read) is
        # committed, so the read must find it; one that arrives during the read may not be
        # visible to it yet.
        known = max(stream_state.seen, head)
        rows = _read(state, stream, cursor, page, known)
        if (rows and rows[0][0] != cursor + 1) or (not rows and known > cursor):
            # The log no longer holds the event after the cursor: retention pruned it. Say so
            # rather than skip silently; the client starts again from the current head.
            head = max(state.store.head(stream), stream_state.seen)
            with conn.lock:
                stream_state.skipped_to(head)
            conn.send_json({"type": "reset", "stream": stream, "head": stream_state.cursor})
            continue
        for seq, frame in rows:
            if conn.write_stored(stream, seq, frame) != "ok":
                return
        if len(rows) < page and _finish(conn, stream):
            return


def _read(
    state: RealtimeState, stream: str, after: int, page: int, known: int
) -> list[tuple[int, bytes]]:
    """The stored events after ``after`` as frames: a read another catch-up made from the same
    cursor a moment ago (replays.py), or the log's answer, shared in turn."""
    rows = state.shared_reads.get(stream, after, page, known)
    if rows is None:
        rows = [(seq, frames.text(payload))
                for seq, payload in state.store.read_since(stream, after, page)]
        if not rows or rows[0][0] == after + 1:  # not a gap retention left: that one resets
            state.shared_reads.put(stream, after, rows)
    return rows


def _start(
    conn: Connection, stream: str, head: int, since: int | None
) -> tuple[int, Any] | None:
    """Fix where a pending subscription starts, now that the head is known."""
    with conn.lock:
        stream_state = conn.streams.get(stream)
        return None if stream_state is None else stream_state.start_at(head, since)


def _finish(conn: Connection, stream: str) -> bool:
    return conn.finish_catch_up(stream)
