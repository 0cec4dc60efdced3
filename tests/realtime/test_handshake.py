"""Who may open a socket, decided before the upgrade, and what they may follow."""

from __future__ import annotations

import pytest
import requests
import websocket

from tests.support.sockets import Client, cookie_header, ws_url


def handshake_status(server, **kwargs) -> int:
    try:
        websocket.create_connection(ws_url(server), timeout=5, **kwargs).close()
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    return 101


def test_anonymous_visitor_is_refused_before_the_upgrade(server):
    assert handshake_status(server, origin=server.url) == 401


def test_a_foreign_origin_cannot_hijack_a_logged_in_session(server, live_login_as):
    http = live_login_as(server, "alice", "alice-demo-pass")
    status = handshake_status(server, cookie=cookie_header(http), origin="https://evil.example")
    assert status == 403


def test_the_check_endpoint_explains_refusals_to_browsers(server, live_login_as):
    anonymous = requests.get(server.url + "/ws/check", timeout=5)
    assert anonymous.status_code == 401
    assert "Log in" in anonymous.json()["error"]["message"]
    http = live_login_as(server, "alice", "alice-demo-pass")
    assert http.get(server.url + "/ws/check", timeout=5).json()["ok"] is True


def test_logged_in_user_is_welcomed_with_their_streams(server, live_login_as):
    client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    try:
        streams = client.welcome["streams"]
        assert "broadcast" in streams
        assert any(s.startswith("user:") for s in streams)
        assert "role:user" in streams
    finally:
        client.close()


@pytest.mark.parametrize("stream", ["user:999999", "role:admin", "room:999999", "ops:cluster", "nonsense"])
def test_user_cannot_follow_streams_that_are_not_theirs(server, live_login_as, stream):
    client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    try:
        reply = client.subscribe(stream)
        assert reply["type"] == "error"
        assert reply["code"] == "forbidden"
        # The socket is still usable afterwards.
        client.send({"type": "ping", "ref": "p"})
        assert client.expect("pong")["ref"] == "p"
    finally:
        client.close()


def test_open_sockets_do_not_hold_database_connections(server, live_login_as):
    """The pool has 15 connections; 25 open sockets must not pin one each (the handshake's
    session is released when the socket starts), or the 16th handshake would hang."""
    clients = []
    try:
        for name in ("alice", "bob"):
            http = live_login_as(server, name, f"{name}-demo-pass")
            clients += [Client(server, http, timeout=10) for _ in range(13)]
        assert len(clients) == 26
        clients[-1].send({"type": "ping", "ref": "last"})
        assert clients[-1].expect("pong")["ref"] == "last"
    finally:
        for client in clients:
            client.close()


def test_the_101_answer_proves_the_key_as_rfc_6455_shows_and_as_wsproto_would():
    """The handshake's answer is written by hand (adoption.accept_response); a client checks
    Sec-WebSocket-Accept against its key and drops the connection when it is wrong."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    from flask_tidings.adoption import accept_response

    answer = accept_response("dGhlIHNhbXBsZSBub25jZQ==")  # RFC 6455, section 1.3
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="localhost", target="/ws"))
    key = [line.split(b": ", 1)[1] for line in request.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key")][0].decode()
    client.receive_data(accept_response(key))
    assert isinstance(next(client.events()), AcceptConnection)
