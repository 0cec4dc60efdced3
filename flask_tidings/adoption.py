"""Taking a WebSocket's connection away from the WSGI server, so that it holds no server thread.

This is the package's one low-level trick with sockets (``gunicorn.limit_malloc_arenas`` is
the other, with memory), and it rests on assumptions about the server:

- the server puts the connection's socket in the WSGI environ (``gunicorn.socket``,
  ``werkzeug.socket``), lets the view write the 101 answer on it itself, and has read nothing
  past the handshake's request (a client waits for the 101 before it sends a frame);
- under gunicorn that socket is a plain ``socket.socket`` whose descriptor the server closes,
  and does nothing else with, once the view returns (gthread or sync worker over plain TCP);
- nothing else holds bytes of this connection in a user-space buffer (TLS terminated by the
  server would: an ``ssl.SSLSocket`` cannot be duplicated into a plain socket).

Where these do not hold, the connection must stay on the server's thread (see the package README
for the servers supported and how each behaves).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

#: RFC 6455: the server proves it read the handshake by hashing the client's key with this.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_response(key: str) -> bytes:
    """The 101 answer to a handshake with ``Sec-WebSocket-Key: key``: no subprotocol and no
    extension (permessage-deflate is never negotiated, see frames.py).

    The handshake's request was checked before the upgrade (admission.handshake_refusal), so
    all that is left is this answer: parsing the request again through h11 and wsproto, as
    simple-websocket did, cost more than every check before it (issue 18).
    """
    accept = base64.b64encode(hashlib.sha1(key.strip().encode("ascii") + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


@dataclass
class Upgraded:
    """A connection the view answers with 101: the server's socket, which server, and the
    answer itself, written by the connection with its first message (one ``send``)."""

    sock: Any
    mode: str  # "gunicorn" or "werkzeug"
    answer: bytes = b""


def upgrade(environ: dict[str, Any]) -> Upgraded:
    """The server's own socket (a blocking one, as the server runs the view) and the 101 to
    write on it."""
    if "werkzeug.socket" in environ:
        sock, mode = environ["werkzeug.socket"], "werkzeug"
    elif "gunicorn.socket" in environ:
        sock, mode = environ["gunicorn.socket"], "gunicorn"
    else:
        raise RuntimeError(
            "flask_tidings cannot reach this server's socket (neither gunicorn.socket nor "
            "werkzeug.socket in the WSGI environ); run gunicorn with --worker-class gthread."
        )
    return Upgraded(sock, mode, accept_response(environ["HTTP_SEC_WEBSOCKET_KEY"]))


def adopt_socket(server_socket: socket.socket) -> socket.socket:
    """Take the connection away from the WSGI server without holding its thread.

    The server closes the socket object it handed us when our view returns. We keep a
    duplicate of the connection's descriptor for ourselves, then point the server's descriptor
    at one end of a socket pair whose other end is already closed: the server's graceful close
    (shutdown, drain until EOF, close) then acts on that stand-in and ends at once, and the real
    connection lives on in the reactor. One socket costs no thread at all.
    """
    ours = server_socket.dup()
    stand_in, peer = socket.socketpair()
    os.dup2(stand_in.fileno(), server_socket.fileno())
    stand_in.close()
    peer.close()
    return ours


def check_server_support() -> None:
    """Refuse at start where sockets cannot work: green threads (gevent, eventlet).

    The reactor is a real thread blocked in ``epoll``, and the command pool uses real threads;
    under monkey-patching those would either block every greenlet or not run at all.
    """
    import sys

    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        raise RuntimeError(
            "flask_tidings needs real threads, and gevent has patched them. Run gunicorn with "
            "--worker-class gthread (worker_class = 'gthread' in gunicorn.conf.py), or sync."
        )
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        raise RuntimeError(
            "flask_tidings needs real threads, and eventlet has patched them. Run gunicorn with "
            "--worker-class gthread (worker_class = 'gthread' in gunicorn.conf.py), or sync."
        )


class TLSSocket:
    """A non-blocking TLS socket that speaks like a plain one to the connection and the reactor.

    ``ssl`` says "would block" with exceptions of its own and may hold decrypted bytes that the
    kernel no longer reports as readable; this turns the first into ``BlockingIOError`` and
    drains the second on every read, so ``epoll`` readiness stays the whole truth.
    """

    def __init__(self, sock: ssl.SSLSocket):
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def send(self, data: bytes) -> int:
        try:
            return self._sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            raise BlockingIOError from None

    def recv(self, size: int) -> bytes:
        try:
            data = self._sock.recv(size)
            while data and self._sock.pending():
                data += self._sock.recv(self._sock.pending())
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:
            return b""

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


def take_over(ws: Upgraded) -> tuple[Any, bool]:
    """The connection's socket for the reactor, and whether the server's thread must stay.

    gunicorn (sync or gthread) over plain TCP: the connection is adopted and the thread is free.
    Anywhere else (Werkzeug's ``flask run``, gunicorn with ``--certfile``) the
    reactor drives the server's own socket while the view holds the server's thread until the
    connection ends: the same protocol and guarantees, one server thread per socket.
    """
    sock = ws.sock
    if ws.mode == "gunicorn" and type(sock) is socket.socket:
        return adopt_socket(sock), False
    if isinstance(sock, ssl.SSLSocket):
        return TLSSocket(sock), True
    if isinstance(sock, socket.socket):
        return sock, True
    raise RuntimeError(
        f"flask_tidings cannot serve sockets of type {type(sock).__name__} (server mode "
        f"{ws.mode!r}); run gunicorn with --worker-class gthread."
    )
