"""Fast, gentle restarts: a stopping worker tells each client when to come back, spread over a
window sized to how many it held; a handshake that reaches a stopping worker is sent on with
the same advice instead of being refused; a HUP reload refuses no handshake."""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import socket
import struct
import threading
import time

import pytest
import websocket

from flask_tidings.frames import restart_reason
from flask_tidings.reactor import restart_delays, restart_window
from tests.realtime.test_revocation import frames_after_the_101, handshake_environ
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, cookie_header, ws_url

RETRY = re.compile(r"^restart; retry in ([0-9]+\.[0-9])s$")


def told_delay(reason: str) -> float:
    match = RETRY.match(reason)
    assert match, f"not a restart reason: {reason!r}"
    return float(match.group(1))


# ---------------------------------------------------------------------- the spread, without I/O

@pytest.mark.parametrize("sockets, window", [(5000, 10.0), (500, 1.0), (50, 0.1), (50_000, 10.0),
                                             (1, 0.002)])
def test_the_window_grows_with_the_sockets_held_up_to_its_cap(sockets, window):
    assert restart_window(sockets, rate=500.0, longest=10.0) == pytest.approx(window)


def test_each_client_gets_its_own_slot_of_the_window():
    delays = restart_delays(1000, window=10.0, rng=random.Random(7))
    assert len(delays) == 1000
    # One per hundredth of the window: no herd at any moment, nobody after the window.
    slots = collections.Counter(int(d / 10.0 * 1000) for d in delays)
    assert set(slots.values()) == {1} and len(slots) == 1000
    assert all(0 <= d < 10.0 for d in delays)


def test_the_close_reason_says_when_in_tenths_of_a_second():
    assert restart_reason(1.74) == "restart; retry in 1.7s"
    assert restart_reason(0) == "restart; retry in 0.0s"
    assert len(restart_reason(9999.9).encode()) <= 123  # fits a close frame


# ------------------------------------------------------------------ a stopping worker, in process

def test_a_handshake_that_reaches_a_stopping_worker_is_upgraded_and_sent_on_with_1001(
        app, client, auth, monkeypatch):
    auth.login()
    cookie = client.get_cookie("session").value
    state = app.extensions["realtime"]
    state.ensure_started()
    monkeypatch.setattr(state, "accepting", False)  # what SIGTERM's shutdown_all sets
    server_end, client_end = socket.socketpair()
    try:
        app(handshake_environ(cookie, server_end), lambda status, headers: None)
        frames = frames_after_the_101(client_end)
    finally:
        client_end.close()
    opcode, payload = frames[-1]
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 1001
    told_delay(payload[2:].decode())


# ---------------------------------------------------------------------- real gunicorn

def close_frame(ws: websocket.WebSocket, timeout: float = 15.0) -> tuple[int, str]:
    ws.settimeout(timeout)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0], data[2:].decode()


def test_sigterm_asks_each_client_back_at_its_own_moment_over_a_window_sized_to_the_sockets(
        tmp_path):
    # 20 sockets at 10 per second: a 2 s window, one client per tenth of it.
    server = start_live_server(tmp_path, workers=1, env={"REALTIME_RESTART_RATE": "10"})
    try:
        http = live_login(server, "alice", "alice-demo-pass")
        clients = [Client(server, http) for _ in range(20)]
        for client in clients:
            # Answered only once the reactor reads this socket: the welcome leaves before the
            # socket is handed to it, and one still on its way when SIGTERM lands is sent back
            # at a random moment of the window (a late arrival), not in its slot.
            client.subscribe(client.own_stream)
        server.process.send_signal(signal.SIGTERM)
        closes = [client.close_frame(timeout=15) for client in clients]
        for client in clients:
            client.close()
    finally:
        server.stop()
    assert {code for code, _ in closes} == {1001}
    delays = sorted(told_delay(reason) for _, reason in closes)
    # Slot i of 20 covers [0.1 i, 0.1 (i + 1)) s; the reason rounds to a tenth.
    for i, delay in enumerate(delays):
        assert 0.1 * i - 0.05 <= delay <= 0.1 * (i + 1) + 0.05, delays


def test_a_hup_reload_refuses_no_handshake_of_clients_that_come_back_when_told(tmp_path):
    """Clients reconnect as realtime.js does: at the moment the 1001 named. Whatever worker
    their handshake reaches (an old one still stopping, or a new one), none is refused."""
    server = start_live_server(tmp_path, workers=2, env={"REALTIME_MAX_SOCKETS_PER_USER": "1000"})
    http = live_login(server, "alice", "alice-demo-pass")
    cookie = cookie_header(http)
    answers: collections.Counter = collections.Counter()
    back = threading.Semaphore(0)
    lock = threading.Lock()
    stop = threading.Event()
    count = 30

    def connect() -> websocket.WebSocket | None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                ws = websocket.create_connection(ws_url(server), cookie=cookie,
                                                 origin=server.url, timeout=20)
            except websocket.WebSocketBadStatusException as exc:
                with lock:
                    answers[exc.status_code] += 1
                time.sleep(0.5)
                continue
            except OSError:
                time.sleep(0.2)  # no worker listening for a moment: not a refusal
                continue
            with lock:
                answers[101] += 1
            return ws
        return None

    def tab() -> None:
        ws = connect()
        while ws is not None and not stop.is_set():
            try:
                code, reason = close_frame(ws, timeout=60)
            except Exception:
                code, reason = None, ""
            ws.close()
            if code == 1001 and RETRY.match(reason):
                time.sleep(told_delay(reason))
                ws = connect()
                if ws is not None:
                    ws.settimeout(20)
                    welcome = ws.recv()
                    if '"welcome"' in welcome:
                        back.release()
                        continue
            ws = None

    threads = [threading.Thread(target=tab, daemon=True) for _ in range(count)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while answers[101] < count:
            assert time.monotonic() < deadline, answers
            time.sleep(0.1)
        os.kill(server.pid, signal.SIGHUP)
        for _ in range(count):
            assert back.acquire(timeout=60), f"not every client came back: {answers}"
        assert set(answers) == {101}, f"handshakes refused during the reload: {answers}"
    finally:
        stop.set()
        server.stop()
