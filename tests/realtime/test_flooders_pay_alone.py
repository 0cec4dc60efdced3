"""A flooder pays for its own flood: what it sends after we closed it is not parsed, the commands
of all one user's sockets share one budget, and a client keeping to the documented rate is never
refused because the worker is slow. Real sockets (socket pairs) and real wsproto, no server."""

from __future__ import annotations

import socket
import struct

from flask_tidings.connection import FRAMES_AFTER_CLOSE
from tests.realtime.test_reactor_shares import (  # noqa: F401  (fixtures)
    CLOSE,
    PING,
    connect,
    frame,
    reactor,
)


class CountingWs:
    """The connection's wsproto, counting every event it parses (a probe, nothing else)."""

    def __init__(self, ws):
        self._ws = ws
        self.parsed = 0

    def events(self):
        for event in self._ws.events():
            self.parsed += 1
            yield event

    def __getattr__(self, name):
        return getattr(self._ws, name)


def test_frames_a_flooder_sends_after_our_close_are_not_parsed(connect):
    conn, flooder = connect(add=False, burst=5, flood_close_after=5)
    probe = conn.ws = CountingWs(conn.ws)
    conn.reactor.add(conn)
    chunk = frame(PING, b"x") * 2000
    for _ in range(20):  # 40,000 pings; the server closes it (4029) within the first dozen
        flooder.send(chunk)
    assert flooder.close_code() == 4029
    flooder.sock.shutdown(socket.SHUT_WR)  # the flooder goes away without a close frame
    assert conn.finished.wait(10), "the connection should end when the client's TCP closes"
    assert probe.parsed <= 5 + 5 + 1 + FRAMES_AFTER_CLOSE


def test_a_client_answering_our_close_is_still_heard(connect):
    conn, peer = connect(burst=1, flood_close_after=0, rate=0.0)
    peer.send(frame(PING, b"a") + frame(PING, b"b"))  # the second is over the rate: 4029
    assert peer.close_code() == 4029
    peer.send(frame(CLOSE, struct.pack("!H", 4029)))
    assert conn.finished.wait(10)
    assert conn.close_code == 4029
