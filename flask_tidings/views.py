"""The socket endpoint: checks before the upgrade, then hand the socket to the reactor.

Every refusal (a malformed handshake, not logged in, foreign ``Origin``, worker full, too many
tabs or connections from one address) happens in ``before_request``, while the answer can still
be a plain HTTP status with a JSON body; the view only writes the 101 and hands the socket on.
The decisions themselves are admission.py's, the socket tricks adoption.py's.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType

from .admission import Refusal, Ticket, handshake_refusal, origin_allowed
from .adoption import Upgraded, take_over, upgrade
from .connection import GOING_AWAY, Connection

if TYPE_CHECKING:
    from .extension import Realtime, RealtimeState

log = logging.getLogger("tidings.realtime")


def _refuse(status: int, message: str, retry_after: int | None = None) -> Response:
    response = jsonify({"error": {"code": status, "message": message}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _answer(refusal: Refusal) -> Response:
    response = _refuse(refusal.status, refusal.message, refusal.retry_after)
    for name, value in refusal.headers:
        response.headers[name] = value
    return response


def make_blueprint(ext: Realtime, state: RealtimeState) -> Blueprint:
    config = state.config
    # The browser client ships with the package: ``url_for("realtime.static", filename="realtime.js")``.
    bp = Blueprint(
        "realtime",
        __name__,
        static_folder="static",
        static_url_path=config["URL"].rstrip("/") + "/static",
    )

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
        # Before the session is read: a logout that arrives from now on must end this socket.
        g._realtime_since = time.monotonic()
        return _refusal(ext, state, reserve=True)

    @bp.teardown_request
    def release(_exc: BaseException | None) -> None:
        # A handshake that was admitted but never became a connection gives its slots back; an
        # adopted connection gives them back when it ends.
        ticket = g.pop("_realtime_ticket", None)
        if ticket is not None and not g.pop("_realtime_adopted", False):
            ticket.release()

    # websocket=True: only an Upgrade request matches (anything else is a 400 from routing).
    @bp.route(config["URL"], websocket=True)
    def socket() -> Response:
        identity = g._realtime_identity
        # What the handshake used (above all a database session holding a pooled connection)
        # is released now; commands run later in request contexts of their own. A connection
        # the database dropped meanwhile fails its rollback here: that must not cost the socket
        # already accepted (the client would hold a silent socket for good).
        try:
            current_app.do_teardown_appcontext()
        except Exception:
            log.warning("realtime handshake teardown failed; socket kept", exc_info=True)
        ws = upgrade(request.environ)
        conn, held = start_connection(
            ext, state, ws, identity, g._realtime_ticket, g._realtime_since
        )
        g._realtime_adopted = True
        if held:
            # A server whose connection cannot be adopted (see adoption.py): the reactor still
            # does all the I/O, but the server must not touch the socket until it is over.
            conn.finished.wait()
        # Returning frees this server thread: the reactor and the command pool take it from here.
        return _Answered() if ws.mode == "gunicorn" else Response()

    return bp


class _Answered(Response):
    """What the view returns under gunicorn once the 101 is written: gunicorn must write
    nothing more, and closes its (stand-in) socket quietly when its call stops like this."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise StopIteration()


def _refusal(ext: Realtime, state: RealtimeState, reserve: bool) -> Response | None:
    """Every check that runs before the upgrade; with ``reserve`` the slots are taken on success.

    Cheap checks first: a malformed handshake or an address over its rate costs no session
    lookup.
    """
    config = state.config
    now = time.monotonic()
    address = request.remote_addr
    if reserve:
        refusal = handshake_refusal(request.method, request.headers)
        if refusal is None:
            refusal = state.admission.attempt(address, now)
        if refusal is not None:
            log.info("socket refused: %s status=%s", refusal.reason, refusal.status)
            return _answer(refusal)
    state.ensure_started()  # first: the identity cache needs to know the broker is connected
    identity = ext.handshake_identity(state)
    if identity is None:
        state.refused_auth += 1
        log.info("socket refused: not logged in")
        return _refuse(401, "Log in to open a realtime connection.")
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if not origin_allowed(origin, own, list(config["ALLOWED_ORIGINS"])):
        state.refused_auth += 1
        log.info("socket refused: origin %s user=%s", origin, identity.user_id)
        return _refuse(403, "This origin may not open a realtime connection.")
    _warn_without_gunicorn_hook()
    if not reserve:
        if not state.accepting:
            return _refuse(503, "This server is restarting; reconnect shortly.",
                           int(config["RETRY_AFTER"]))
        refusal = state.admission.check(identity.user_id, address)
        return _answer(refusal) if refusal is not None else None
    # A worker that is stopping still upgrades a handshake it had already accepted, and closes
    # it at once with 1001 and when to come back (start_connection): a refusal would send the
    # browser into its long backoff, a restart's close into a short, spread one.
    ticket = state.admission.reserve(identity.user_id, address, now)
    if isinstance(ticket, Refusal):
        if ticket.reason == "capacity":
            state.refused_capacity += 1
            log.warning(
                "socket refused: capacity %s reached user=%s worker=%s",
                config["MAX_SOCKETS"],
                identity.user_id,
                state.worker,
            )
        else:
            log.info("socket refused: %s user=%s", ticket.reason, identity.user_id)
        return _answer(ticket)
    g._realtime_ticket = ticket
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


def start_connection(
    ext: Realtime, state: RealtimeState, ws: Upgraded, identity: Any, ticket: Ticket,
    since: float,
) -> tuple[Connection, bool]:
    """Register the connection and hand it to the reactor; True when the server's thread must
    stay with it (see :func:`adoption.take_over`)."""
    assert state.reactor is not None and state.commands is not None
    environ = request.environ
    kept = {key: environ[key] for key in _KEPT if key in environ}
    kept.update({key: value for key, value in environ.items() if key.startswith("HTTP_")})
    sock, held = take_over(ws)
    conn = Connection(sock, WsConnection(ConnectionType.SERVER), identity, state.limits,
                      state.reactor, ticket.budget)
    conn.environ = kept
    conn.schedule = state.commands.schedule
    commands = state.commands

    def finished(conn: Connection) -> None:
        ticket.release()
        commands.finished(conn)

    conn.on_finished = finished
    revoked = state.hub.add(conn, since)
    # Counted and logged before the reactor sees it: the reactor may end it at once (a client
    # that closes straight away), and its close must come after its open, in the log too.
    state.opened += 1
    log.info("socket open conn=%s user=%s worker=%s", conn.id, identity.user_id, state.worker)
    try:
        # The 101 and the first frame (welcome, or the close) leave in one send.
        with conn.batched():
            conn.write_raw(ws.answer)
            if revoked is not None:
                # Signed out (or deactivated) while this handshake was in flight.
                conn.close(*revoked)
            elif not state.accepting or state.reactor.stopping:
                # Closed here, not by the reactor: this process may exit before the reactor runs.
                conn.close(GOING_AWAY, state.reactor.late_restart_reason())
            else:
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
        if conn.writable:
            for hook in ext._connect_hooks:
                safe_hook(hook, conn)
        state.reactor.add(conn)
    except BaseException:
        # Not handed to the reactor: end it here, once, as the reactor would have (the hub
        # forgets it, its slots are given back, its close is counted and logged).
        conn.sock.close()
        conn.mark_finished()
        raise
    return conn, held


_warned = False


def _warn_without_gunicorn_hook() -> None:
    global _warned
    if _warned or not request.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        return
    from . import gunicorn as hooks

    _warned = True
    if not hooks.installed:
        log.warning(
            "flask_tidings: gunicorn's worker hook is not installed, so SIGTERM closes sockets "
            "abruptly (1006) instead of with 1001. Add to gunicorn.conf.py: "
            "from flask_tidings.gunicorn import post_worker_init"
        )


def safe_hook(hook: Any, conn: Connection) -> None:
    try:
        hook(conn)
    except Exception:
        log.exception("realtime hook failed conn=%s", conn.id)
