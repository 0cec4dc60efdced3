"""Taking a WebSocket's connection away from the WSGI server, so that it holds no server thread.

This is the one low-level trick of the package, and it rests on assumptions about the server:

- the server hands the view a plain ``socket.socket`` (``ws.sock`` from simple-websocket) whose
  descriptor it closes, and does nothing else with, once the view returns (gunicorn's gthread
  worker over plain TCP);
- nothing else holds bytes of this connection in a user-space buffer (TLS terminated by the
  server would: an ``ssl.SSLSocket`` cannot be duplicated into a plain socket).

Where these do not hold, the connection must stay on the server's thread (see the package README
for the servers supported and how each behaves).
"""

from __future__ import annotations

import os
import socket


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
