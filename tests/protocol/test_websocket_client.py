"""The protocol through websocket-client (synchronous): handshake, resume, pings, close."""

from __future__ import annotations

import struct

import pytest
import websocket

from tests.support.sockets import Client, cookie_header, publisher, ws_url


@pytest.fixture
def client(server, alice):
    client = Client(server, alice)
    yield client
    client.close()


def test_the_session_cookie_opens_the_socket_and_the_welcome_describes_it(client, server):
    welcome = client.welcome
    uid = welcome["user"]
    assert welcome["streams"] == [f"user:{uid}", "broadcast", "role:user"]
    assert welcome["heartbeat"] == 2.0
    assert welcome["max_message_bytes"] == 65536
    assert welcome["conn"].startswith(client.worker)


def test_without_the_cookie_the_handshake_is_refused_with_401(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(server), origin=server.url, timeout=5)
    assert refused.value.status_code == 401


def test_subscribing_with_after_replays_the_missed_events_then_goes_live(client, server):
    jobs = publisher(server)
    stream = f"user:{client.welcome['user']}"
    missed = [jobs.notify(client.welcome["user"], "notification", {"n": n}).seq for n in range(3)]
    reply = client.subscribe(stream, after=missed[0] - 1)
    assert (reply["type"], reply["head"], reply["after"]) == ("subscribed", missed[-1],
                                                              missed[0] - 1)
    assert [e["id"] for e in client.events(3, stream)] == missed
    fresh = jobs.notify(client.welcome["user"], "notification", {"n": "live"}).seq
    assert [e["id"] for e in client.events(1, stream)] == [fresh]


def test_subscribing_without_after_starts_at_the_head(client, server):
    jobs = publisher(server)
    uid = client.welcome["user"]
    old = jobs.notify(uid, "notification", {"n": "old"}).seq
    reply = client.subscribe(f"user:{uid}")
    assert reply["head"] == reply["after"] == old
    new = jobs.notify(uid, "notification", {"n": "new"}).seq
    assert [e["id"] for e in client.events(1)] == [new]


def test_a_json_ping_is_answered_with_a_pong_echoing_its_ref(client):
    client.send({"type": "ping", "ref": "p-1"})
    assert client.expect("pong")["ref"] == "p-1"


def test_a_protocol_ping_frame_is_answered_with_a_pong_frame_of_the_same_payload(client):
    client.ws.ping("websocket-client ping")
    client.ws.settimeout(10)
    while True:
        opcode, data = client.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            break
    assert data == b"websocket-client ping"


def test_a_normal_close_is_echoed_with_1000(server, alice):
    ws = websocket.create_connection(ws_url(server), cookie=cookie_header(alice),
                                     origin=server.url, timeout=10)
    ws.send_close(websocket.STATUS_NORMAL, b"done")
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert struct.unpack("!H", data[:2])[0] == 1000
    ws.shutdown()
