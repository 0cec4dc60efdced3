"""The socket endpoint: checks before the upgrade, then hand the socket to the reactor.

flask-sock accepts the WebSocket before the route function runs, so every refusal (not logged in,
foreign ``Origin``, worker full, too many tabs) happens in ``before_request``, while the answer
can still be a plain HTTP status.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_sock import Sock

from .adoption import adopt_socket
from .connection import Connection

if TYPE_CHECKING:
    from .extension import Realtime, RealtimeState

log = logging.getLogger("tidings.realtime")


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
    config = state.config
    # The browser client ships with the package: ``url_for("realtime.static", filename="realtime.js")``.
    bp = Blueprint(
        "realtime",
        __name__,
        static_folder="static",
        static_url_path=config["URL"].rstrip("/") + "/static",
    )
    sock = Sock()

    @bp.get(config["URL"].rstrip("/") + "/check")
    def check() -> Response:
        """Why a handshake would be refused: browsers never show a failed handshake's status."""
        refusal = _refusal(ext, state, reserve=False)
        return refusal or jsonify(
            {"ok": True, "sockets": state.hub.count(), "capacity": int(config["MAX_SOCKETS"])}
        )

    @bp.before_request
    def admit() -> Response | None:
        if request.endpoint != "realtime.socket":
            return None
        return _refusal(ext, state, reserve=True)

    @bp.teardown_request
    def release(_exc: BaseException | None) -> None:
        # A handshake that was admitted but never became a connection gives its slot back; an
        # adopted connection gives it back when it ends.
        if g.pop("_realtime_identity", None) is not None and not g.pop("_realtime_adopted", False):
            with state._admit_lock:
                state.admitted -= 1

    @sock.route(config["URL"], bp=bp)
    def socket(ws: Any) -> None:
        identity = g._realtime_identity
        # What the handshake used (above all a database session holding a pooled connection)
        # is released now; commands run later in request contexts of their own. A connection
        # the database dropped meanwhile fails its rollback here: that must not cost the socket
        # already accepted (the client would hold a silent socket for good).
        try:
            current_app.do_teardown_appcontext()
        except Exception:
            log.warning("realtime handshake teardown failed; socket kept", exc_info=True)
        start_connection(ext, state, ws, identity)
        g._realtime_adopted = True
        # Returning frees this server thread: the reactor and the command pool take it from here.

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
    if reserve and not state.handshake_allowed(identity.user_id):
        return _refuse(429, "Too many connection attempts; wait a minute.", 60)
    with state._admit_lock:
        if state.admitted >= int(config["MAX_SOCKETS"]):
            state.refused_capacity += 1
            log.warning(
                "socket refused: capacity %s reached user=%s worker=%s",
                config["MAX_SOCKETS"],
                identity.user_id,
                state.worker,
            )
            return _refuse(503, "Realtime capacity reached; retry shortly.", retry)
        if reserve:
            state.admitted += 1
    if reserve:
        g._realtime_identity = identity
        # One compressor per socket costs memory, and a shared frame cannot be compressed
        # per socket: decline permessage-deflate by not letting the handshake see the offer.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    return None


#: Request keys a command's request context is rebuilt from (cookies for the session, host ...).
_KEPT = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
)


def start_connection(ext: Realtime, state: RealtimeState, ws: Any, identity: Any) -> None:
    # flask-sock's own close() after we return must not write: the socket is ours now.
    ws.connected = False
    assert state.reactor is not None
    environ = request.environ
    kept = {key: environ[key] for key in _KEPT if key in environ}
    kept.update({key: value for key, value in environ.items() if key.startswith("HTTP_")})
    conn = Connection(
        adopt_socket(ws.sock), ws.ws, identity, state.limits, state.reactor, worker=state.worker
    )
    conn.environ = kept
    conn.schedule = state.commands.schedule
    conn.on_finished = state.commands.finished
    state.hub.add(conn)
    try:
        conn.send_json(
            {
                "type": "welcome",
                "conn": conn.id,
                "user": identity.user_id,
                "streams": ext.default_streams(identity),
                "heartbeat": state.limits.heartbeat,
                "max_message_bytes": state.limits.max_message_bytes,
            }
        )
        for hook in ext._connect_hooks:
            safe_hook(hook, conn)
        state.reactor.add(conn)
    except BaseException:
        # Not handed to the reactor: nobody else would ever forget this connection.
        state.hub.remove(conn)
        conn.sock.close()
        raise
    state.opened += 1
    log.info("socket open conn=%s user=%s worker=%s", conn.id, identity.user_id, state.worker)


def safe_hook(hook: Any, conn: Connection) -> None:
    try:
        hook(conn)
    except Exception:
        log.exception("realtime hook failed conn=%s", conn.id)
