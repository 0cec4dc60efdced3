"""A socket's open is counted and logged before the reactor can end it: its close never comes
first, in the figures or in the log (the reactor may finish a connection the instant it gets it).

In process: the handshake runs through the real app on one end of a socket pair, the client's
close frame is already waiting, and the handshake thread is held right after it hands the
connection over, as a busy machine may hold it."""

from __future__ import annotations

import logging
import os
import socket
import struct

from tests.realtime.test_revocation import handshake_environ


def masked_close(code: int) -> bytes:
    payload = struct.pack("!H", code)
    mask = os.urandom(4)
    return bytes((0x88, 0x80 | len(payload))) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def test_the_open_of_a_socket_is_logged_and_counted_before_its_close(app, client, auth,
                                                                     monkeypatch, caplog):
    auth.login()
    cookie = client.get_cookie("session").value
    state = app.extensions["realtime"]
    state.ensure_started()
    reactor = state.reactor
    hand_over = reactor.add
    seen: dict[str, int] = {}

    def hand_over_then_lose_the_cpu(conn):
        hand_over(conn)
        # The reactor reads the waiting close and ends the connection before this thread runs on.
        assert conn.finished.wait(10), "the reactor did not end the connection"
        seen["opened"], seen["closed"] = state.opened, state.closed

    monkeypatch.setattr(reactor, "add", hand_over_then_lose_the_cpu)
    opened_before, closed_before = state.opened, state.closed
    server_end, client_end = socket.socketpair()
    client_end.sendall(masked_close(1000))
    caplog.set_level(logging.INFO, logger="tidings.realtime")
    try:
        app(handshake_environ(cookie, server_end), lambda status, headers: None)
    finally:
        client_end.close()
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith(("socket open", "socket close"))]
    assert [line.split()[1] for line in lines] == ["open", "close"], lines
    assert seen == {"opened": opened_before + 1, "closed": closed_before + 1}


def test_a_command_that_arrives_while_the_worker_exits_is_dropped_not_a_reactor_error():
    """gunicorn's ``worker_exit`` shuts the command pool down while the reactor may still read a
    client's last frames (its socket already has its 1001). Scheduling one must not raise into
    the reactor's loop, which logged "realtime reactor error" at every restart of the storm."""
    from types import SimpleNamespace

    from flask_tidings.commands import CommandRunner

    ran = []
    runner = CommandRunner(ext=None, state=None, threads=1)
    conn = SimpleNamespace(id="late", identity=SimpleNamespace(user_id="1"),
                           pop_command=lambda: ran.append(1))
    runner.shutdown()
    runner.schedule(conn)
    runner.pool.shutdown(wait=True)
    assert ran == []
