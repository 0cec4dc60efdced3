"""A logout that lands while a handshake is in flight (after it read the session, before its
connection registered) still closes that socket: the disconnect is remembered with its time.

In process and deterministic: the handshake runs through the real app and views on one end of a
socket pair (as a WSGI server would hand it over), and the logout's disconnect is delivered just
after the session was read."""

from __future__ import annotations

import base64
import os
import socket
import struct

from werkzeug.test import EnvironBuilder

from app.extensions import realtime


def handshake_environ(cookie: str, server_end: socket.socket) -> dict:
    builder = EnvironBuilder(
        path="/ws",
        base_url="http://localhost",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Origin": "http://localhost",
            "Cookie": f"session={cookie}",
        },
    )
    environ = builder.get_environ()
    environ["werkzeug.socket"] = server_end
    return environ


def frames_after_the_101(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The frames the server sent after its 101, up to its close frame (or the end)."""
    sock.settimeout(10)
    data = b""
    while True:
        head, _, rest = data.partition(b"\r\n\r\n")
        frames = parse(rest)
        if frames and frames[-1][0] == 0x8:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return frames


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """Whole server frames (unmasked) at the start of ``data``."""
    frames = []
    while len(data) >= 2:
        n, offset = data[1] & 0x7F, 2
        if n == 126:
            n, offset = struct.unpack("!H", data[2:4])[0], 4
        if len(data) < offset + n:
            break
        frames.append((data[0] & 0x0F, data[offset:offset + n]))
        data = data[offset + n:]
    return frames


def test_a_logout_delivered_mid_handshake_closes_the_new_socket_with_4001(app, client, auth,
                                                                          monkeypatch):
    auth.login()
    cookie = client.get_cookie("session").value
    state = app.extensions["realtime"]
    state.ensure_started()
    load = realtime._identity_loader

    def session_read_then_logout_arrives():
        identity = load()
        # What the broker's thread does when another request's logout is announced.
        state._deliver([{"k": "control", "op": "disconnect_user", "user": identity.user_id,
                         "code": 4001, "reason": "signed out"}])
        return identity

    monkeypatch.setattr(realtime, "_identity_loader", session_read_then_logout_arrives)
    server_end, client_end = socket.socketpair()
    try:
        app(handshake_environ(cookie, server_end), lambda status, headers: None)
        frames = frames_after_the_101(client_end)
    finally:
        client_end.close()
    assert frames, "the server sent nothing after its 101"
    opcode, payload = frames[-1]
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 4001
    assert not any(b'"welcome"' in payload for _, payload in frames)


def test_a_socket_opened_after_an_earlier_logout_is_welcomed(app, client, auth):
    auth.login()
    state = app.extensions["realtime"]
    state.ensure_started()
    user_id = "1"
    state._deliver([{"k": "control", "op": "disconnect_user", "user": user_id,
                     "code": 4001, "reason": "signed out"}])
    cookie = client.get_cookie("session").value
    server_end, client_end = socket.socketpair()
    try:
        app(handshake_environ(cookie, server_end), lambda status, headers: None)
        client_end.settimeout(10)
        data = b""
        while b'"welcome"' not in data:
            chunk = client_end.recv(65536)
            assert chunk, "closed before the welcome"
            data += chunk
    finally:
        client_end.close()
