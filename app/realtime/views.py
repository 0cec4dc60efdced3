"""The socket endpoint: checks before the upgrade, then the session loop of one connection.

flask-sock accepts the WebSocket before the route function runs, so every refusal (not logged in,
foreign ``Origin``, worker full, too many tabs) happens in ``before_request``, while the answer
can still be a plain HTTP status.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_sock import Sock

from . import frames
from .connection import Connection

if TYPE_CHECKING:
    from .extension import Realtime, RealtimeState

log = logging.getLogger("tidings.realtime")

#: Streams one connection may follow at once.
MAX_STREAMS = 200


def _refuse(status: int, message: str, retry_after: int | None = None) -> Response:
    response = jsonify({"error": {"code": status, "message": message}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    if origin is None:
        return True  # not a browser: browsers always send Origin on a WebSocket handshake
    if origin in allowed:
        return True
    own = urlsplit(request.host_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) in {("http", own.netloc), ("https", own.netloc)}


def make_blueprint(ext: Realtime, state: RealtimeState) -> Blueprint:
    bp = Blueprint("realtime", __name__)
    sock = Sock()
    config = state.config

    @bp.get(config["URL"].rstrip("/") + "/check")
    def check() -> Response:
        """Why a handshake would be refused: browsers never show a failed handshake's status."""
        refusal = _refusal(ext, state, reserve=False)
        return refusal or jsonify({"ok": True, "sockets": state.hub.count(),
                                   "capacity": int(config["MAX_SOCKETS"])})

    @bp.before_request
    def admit() -> Response | None:
        if request.endpoint != "realtime.socket":
            return None
        return _refusal(ext, state, reserve=True)

    @bp.teardown_request
    def release(_exc: BaseException | None) -> None:
        if g.pop("_realtime_identity", None) is not None:
            with state._admit_lock:
                state.admitted -= 1

    @sock.route(config["URL"], bp=bp)
    def socket(ws: Any) -> None:
        identity = g._realtime_identity
        # This request lives as long as the socket. Run the app context's teardown now, so
        # what the handshake used (above all a database session holding a pooled connection)
        # is released instead of being held for hours; commands get fresh app contexts.
        current_app.do_teardown_appcontext()
        serve(ext, state, ws, identity)

    return bp


def _refusal(ext: Realtime, state: RealtimeState, reserve: bool) -> Response | None:
    """Every check that runs before the upgrade; with ``reserve`` a slot is taken on success."""
    config = state.config
    identity = ext._identity_loader()
    if identity is None:
        state.refused_auth += 1
        log.info("socket refused: not logged in")
        return _refuse(401, "Log in to open a realtime connection.")
    origin = request.headers.get("Origin")
    if not _origin_allowed(origin, list(config["ALLOWED_ORIGINS"])):
        state.refused_auth += 1
        log.info("socket refused: origin %s user=%s", origin, identity.user_id)
        return _refuse(403, "This origin may not open a realtime connection.")
    state.ensure_started()
    retry = int(config["RETRY_AFTER"])
    if not state.accepting:
        return _refuse(503, "This server is restarting; reconnect shortly.", retry)
    if len(state.hub.user_connections(identity.user_id)) >= int(config["MAX_SOCKETS_PER_USER"]):
        return _refuse(429, "Too many open tabs for this account.", retry)
    with state._admit_lock:
        if state.admitted >= int(config["MAX_SOCKETS"]):
            state.refused_capacity += 1
            log.warning("socket refused: capacity %s reached user=%s worker=%s",
                        config["MAX_SOCKETS"], identity.user_id, state.worker)
            return _refuse(503, "Realtime capacity reached; retry shortly.", retry)
        if reserve:
            state.admitted += 1
    if reserve:
        g._realtime_identity = identity
        # One compressor per socket costs memory, and a shared frame cannot be compressed
        # per socket: decline permessage-deflate by not letting the handshake see the offer.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    return None


def serve(ext: Realtime, state: RealtimeState, ws: Any, identity: Any) -> None:
    """Run one connection until it ends; this thread then belongs to its commands."""
    # From here on the socket is ours: flask-sock's own close() after we return must not write.
    ws.connected = False
    assert state.reactor is not None
    conn = Connection(ws.sock, ws.ws, identity, state.limits, state.reactor, worker=state.worker)
    state.hub.add(conn)
    state.reactor.add(conn)
    state.opened += 1
    log.info("socket open conn=%s user=%s worker=%s", conn.id, identity.user_id, state.worker)
    conn.send_json({
        "type": "welcome",
        "conn": conn.id,
        "user": identity.user_id,
        "streams": ext.default_streams(identity),
        "heartbeat": state.limits.heartbeat,
        "max_message_bytes": state.limits.max_message_bytes,
    })
    try:
        for hook in ext._connect_hooks:
            _safe(hook, conn)
        while (command := conn.next_command()) is not None:
            try:
                _handle(ext, state, conn, command)
            except Exception:
                log.exception("realtime command failed conn=%s", conn.id)
                conn.send_json({"type": "error", "code": "server_error",
                                "message": "The server could not handle that message."})
    finally:
        state.hub.remove(conn)
        state.closed += 1
        code = str(conn.close_code or "peer")
        state.close_codes[code] = state.close_codes.get(code, 0) + 1
        log.info("socket close conn=%s user=%s worker=%s code=%s reason=%s", conn.id,
                 identity.user_id, state.worker, conn.close_code, conn.close_reason or "-")
        for hook in ext._disconnect_hooks:
            _safe(hook, conn)


def _safe(hook: Any, conn: Connection) -> None:
    try:
        hook(conn)
    except Exception:
        log.exception("realtime hook failed conn=%s", conn.id)


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
    if not (ref is None or (isinstance(ref, (str, int)) and not isinstance(ref, bool)
                            and len(str(ref)) <= 64)):
        _error(conn, "bad_message", '"ref" must be a short string or number.')
        return
    if not isinstance(message.get("type"), str):
        _error(conn, "bad_message", 'A message is a JSON object with a string "type".', ref)
        return
    kind = message["type"]
    if kind == "subscribe":
        subscribe(ext, state, conn, message.get("stream"), message.get("after"), ref)
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

        with state.app.app_context():
            try:
                result = ext._handlers[kind](conn, message.get("data"))
            except RealtimeError as exc:
                _error(conn, exc.code, exc.message, ref)
                return
        conn.send_json({"type": "reply", "ref": ref, "data": result})
    else:
        _error(conn, "unknown_type", f"Unknown message type {kind[:40]!r}.", ref)


def subscribe(ext: Realtime, state: RealtimeState, conn: Connection, stream: Any, after: Any,
              ref: Any) -> None:
    if not isinstance(stream, str) or not 0 < len(stream) <= 200:
        _error(conn, "bad_message", '"stream" must be a stream name.', ref)
        return
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        _error(conn, "bad_message", '"after" must be a non-negative integer.', ref)
        return
    with state.app.app_context():
        allowed = ext.can_follow(conn.identity, stream)
    if not allowed:
        _error(conn, "forbidden", f"You may not follow {stream[:80]!r}.", ref)
        return
    if stream in conn.streams:
        conn.send_json({"type": "subscribed", "stream": stream, "ref": ref,
                        "after": conn.streams[stream].cursor})
        return
    if len(conn.streams) >= MAX_STREAMS:
        _error(conn, "too_many_streams", f"At most {MAX_STREAMS} streams per connection.", ref)
        return
    from .connection import StreamState

    stream_state = StreamState()  # catching up: live events only raise "seen" until we are done
    with conn.lock:
        conn.streams[stream] = stream_state
    state.hub.subscribe(conn, stream)
    head = state.store.head(stream)
    start = head if after is None or after > head else after
    with conn.lock:
        stream_state.cursor = start
    conn.send_json({"type": "subscribed", "stream": stream, "head": head, "after": start,
                    "ref": ref})
    catch_up(state, conn, stream)


def catch_up(state: RealtimeState, conn: Connection, stream: str) -> None:
    """Write every stored event after the connection's cursor, then go live again."""
    page = int(state.config["REPLAY_PAGE"])
    while not conn.finished.is_set():
        stream_state = conn.streams.get(stream)
        if stream_state is None:
            return
        rows = state.store.read_since(stream, stream_state.cursor, page)
        for seq, payload in rows:
            if not conn.write_stored(stream, seq, frames.text(payload)):
                return
        if len(rows) < page and conn.finish_catch_up(stream):
            return
