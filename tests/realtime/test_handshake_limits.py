"""Handshakes are checked before flask-sock runs: a malformed one gets a JSON 4xx (never a 500
page), the Origin's scheme counts, one address cannot hold unlimited sockets or handshakes
whatever accounts it uses, parallel handshakes cannot slip past the per-user cap, a logout
during a handshake closes that socket too, and the welcome names neither host nor pid."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

import pytest
import requests
import websocket

from tests.support.forms import csrf_token_from
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, cookie_header, ws_url

PER_USER = 3
PER_ADDRESS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(tmp_path_factory.mktemp("handshake-limits"), workers=1,
                             env={"REALTIME_MAX_SOCKETS_PER_USER": str(PER_USER),
                                  "REALTIME_MAX_SOCKETS_PER_ADDRESS": str(PER_ADDRESS)})
    yield live
    live.stop()


@pytest.fixture(scope="module")
def alice(server):
    return live_login(server, "alice", "alice-demo-pass")


@pytest.fixture(scope="module")
def bob(server):
    return live_login(server, "bob", "bob-demo-pass")


def open_socket(server, http, origin: str | None = None) -> websocket.WebSocket:
    return websocket.create_connection(ws_url(server), cookie=cookie_header(http),
                                       origin=origin or server.url, timeout=10)


def handshake_status(server, http, **kwargs) -> int:
    try:
        open_socket(server, http, **kwargs).close()
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    return 101


def key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


@pytest.mark.parametrize("changes, status", [
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Sec-WebSocket-Version": ""}, 426),
    ({"Sec-WebSocket-Key": None}, 400),
    ({"Sec-WebSocket-Key": "tooshort"}, 400),
], ids=["version-8", "empty-version", "no-key", "bad-key"])
def test_a_handshake_we_cannot_complete_gets_a_json_4xx_not_a_500_page(server, alice, changes,
                                                                       status):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key(),
               "Sec-WebSocket-Version": "13", "Origin": server.url}
    headers.update(changes)
    headers = {name: value for name, value in headers.items() if value is not None}
    response = alice.get(server.url + "/ws", headers=headers, timeout=10)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == status
    if status == 426:
        assert response.headers["Sec-WebSocket-Version"] == "13"


def test_a_page_served_over_the_other_scheme_cannot_open_a_socket(server, alice):
    same_host_https = server.url.replace("http://", "https://")
    assert handshake_status(server, alice, origin=same_host_https) == 403
    assert handshake_status(server, alice, origin=server.url) == 101


def test_the_welcome_names_neither_the_host_nor_the_worker_pid(server, alice):
    client = Client(server, alice)
    try:
        conn = client.welcome["conn"]
        [pid] = server.worker_pids()
        assert str(pid) not in conn
        assert socket.gethostname() not in conn
        # Sockets of one worker still share a recognisable prefix.
        other = Client(server, alice)
        assert other.worker == client.worker
        other.close()
    finally:
        client.close()


def test_parallel_handshakes_cannot_get_past_the_per_user_cap(server, alice):
    attempts = 30
    start = threading.Barrier(attempts)
    opened: list[websocket.WebSocket] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def handshake() -> None:
        start.wait()
        try:
            ws = open_socket(server, alice)
        except websocket.WebSocketBadStatusException as exc:
            with lock:
                statuses.append(exc.status_code)
            return
        with lock:
            opened.append(ws)
            statuses.append(101)

    threads = [threading.Thread(target=handshake) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert len(opened) == PER_USER, statuses
        assert sorted(set(statuses)) == [101, 429]
    finally:
        for ws in opened:
            ws.close()


def wait_for_slots(server, http, deadline_s: float = 10.0) -> None:
    """Closed sockets give their slots back once the server has seen the close."""
    deadline = time.monotonic() + deadline_s
    while http.get(server.url + "/ws/check", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "slots were not given back"
        time.sleep(0.1)


def test_one_address_cannot_hold_more_sockets_whatever_accounts_it_uses(server, alice, bob):
    wait_for_slots(server, alice)
    wait_for_slots(server, bob)
    held = [open_socket(server, alice) for _ in range(PER_USER)]
    held += [open_socket(server, bob) for _ in range(PER_ADDRESS - PER_USER)]
    try:
        # Bob is under his own cap, but the address is at its cap.
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            open_socket(server, bob)
        assert refused.value.status_code == 429
        assert int(refused.value.resp_headers["retry-after"]) > 0
        check = bob.get(server.url + "/ws/check", timeout=5)
        assert check.status_code == 429 and "address" in check.json()["error"]["message"]
    finally:
        for ws in held:
            ws.close()
    wait_for_slots(server, bob)
    open_socket(server, bob).close()


def test_handshakes_per_address_are_limited_before_any_session_is_read(tmp_path):
    live = start_live_server(tmp_path, workers=1,
                             env={"REALTIME_HANDSHAKES_PER_MINUTE_PER_ADDRESS": "4"})
    try:
        alice = live_login(live, "alice", "alice-demo-pass")
        # Anonymous attempts count too: they are the cheap ones to make.
        assert handshake_status(live, requests.Session()) == 401
        for _ in range(3):
            assert handshake_status(live, alice) == 101
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            open_socket(live, alice)
        assert refused.value.status_code == 429
        assert refused.value.resp_headers["retry-after"] == "60"
    finally:
        live.stop()


def test_a_logout_during_handshakes_closes_every_socket_they_opened(server, bob):
    """Handshakes race a logout: every socket that got through is closed with 4001, none is
    left open on a session that no longer exists."""
    http = live_login(server, "bob", "bob-demo-pass")
    wait_for_slots(server, http)
    results: list[websocket.WebSocket] = []
    lock = threading.Lock()
    go = threading.Event()

    def handshake() -> None:
        go.wait()
        try:
            ws = open_socket(server, http)
        except (websocket.WebSocketException, OSError):
            return
        with lock:
            results.append(ws)

    token = csrf_token_from(http.get(server.url + "/").text)
    threads = [threading.Thread(target=handshake) for _ in range(PER_USER)]
    for thread in threads:
        thread.start()
    go.set()
    http.post(server.url + "/auth/logout", data={"csrf_token": token}, timeout=10)
    for thread in threads:
        thread.join(timeout=30)
    for ws in results:
        ws.settimeout(10)
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == 4001
                break
        ws.close()
