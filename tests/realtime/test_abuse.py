"""Bad input gets a defined answer and loses nothing: oversize, floods, stalls, protocol errors."""

from __future__ import annotations

import json
import threading
import time

from tests.support.sockets import Client, RawClient, health, publisher


def test_oversize_message_closes_with_1009(server, live_login_as):
    client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    limit = client.welcome["max_message_bytes"]
    client.ws.send(json.dumps({"type": "ping", "pad": "x" * (limit + 1)}))
    code, _reason = client.close_frame()
    assert code == 1009


def test_binary_frames_are_refused_with_1003(server, live_login_as):
    raw = RawClient(server, live_login_as(server, "alice", "alice-demo-pass"))
    raw.send_frame(0x2, b"\x00\x01\x02")
    assert raw.close_code() == 1003
    raw.close()


def test_invalid_utf8_closes_with_1007(server, live_login_as):
    raw = RawClient(server, live_login_as(server, "alice", "alice-demo-pass"))
    raw.send_frame(0x1, b'{"type":"ping","x":"\xff\xfe"}')
    assert raw.close_code() == 1007
    raw.close()


def test_unmasked_client_frame_closes_with_1002(server, live_login_as):
    raw = RawClient(server, live_login_as(server, "alice", "alice-demo-pass"))
    raw.send_frame(0x1, b'{"type":"ping"}', masked=False)
    assert raw.close_code() == 1002
    raw.close()


def test_malformed_messages_get_error_frames_and_the_socket_stays_open(server, live_login_as):
    client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    try:
        cases = ["not json", "[1,2]", '{"type": 5}', '{"no": "type"}', '{"type": "what"}',
                 '{"type": "subscribe", "stream": 7}',
                 '{"type": "subscribe", "stream": "broadcast", "after": -1}']
        codes = []
        for text in cases:
            client.ws.send(text)
            codes.append(client.expect("error")["code"])
        assert codes == ["bad_json", "bad_message", "bad_message", "bad_message",
                         "unknown_type", "bad_message", "bad_message"]
        client.send({"type": "ping", "ref": 1})
        assert client.expect("pong")["ref"] == 1
    finally:
        client.close()


def test_a_flood_is_throttled_then_closed_and_others_are_unaffected(server, live_login_as):
    flooder = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    bystander = Client(server, live_login_as(server, "bob", "bob-demo-pass"))
    try:
        bystander.subscribe("broadcast")
        for _ in range(400):
            try:
                flooder.ws.send('{"type":"ping"}')
            except Exception:
                break
        kinds = set()
        code = None
        while code is None:
            opcode, data = flooder.ws.recv_data(control_frame=True)
            if opcode == 8:
                code = int.from_bytes(data[:2], "big")
            elif opcode == 1:
                kinds.add(json.loads(data).get("code") or json.loads(data)["type"])
        assert "rate_limited" in kinds
        assert code == 4029
        event = publisher(server).broadcast("announcement", {"title": "still here"})[0]
        assert bystander.events(1, "broadcast")[0]["id"] == event.seq
    finally:
        bystander.close()


def test_a_client_that_stops_reading_never_delays_the_others(redis_server, live_login_as):
    """Fill a stalled reader's buffers, then broadcast: healthy clients get every broadcast in
    order while the stalled one is cut off with 4008 (live fan-out through Redis)."""
    server = redis_server
    jobs = publisher(server)
    stalled_http = live_login_as(server, "bob", "bob-demo-pass")
    stalled = RawClient(server, stalled_http)
    stalled.send_text(json.dumps({"type": "subscribe", "stream": "broadcast"}))
    alice = live_login_as(server, "alice", "alice-demo-pass")
    healthy = [Client(server, alice) for _ in range(3)]
    try:
        for client in healthy:
            start = client.subscribe("broadcast")["after"]
        time.sleep(0.3)
        # Large broadcasts first (they fill the kernel buffers of the reader that never reads),
        # then small ones: a naive loop would hang at the stalled socket from here on.
        big = "x" * 200_000
        total = 130
        results: dict[int, list[int]] = {}

        def read(index: int, client: Client) -> None:
            # A healthy client that cannot keep up with a 16 MB burst on a loaded machine may be
            # cut off too (4008); like the browser client it then resumes from its cursor, and
            # must still end up with every broadcast exactly once, in order.
            ids: list[int] = []
            deadline = time.monotonic() + 90
            while len(ids) < total and time.monotonic() < deadline:
                try:
                    message = client.recv(timeout=max(0.1, deadline - time.monotonic()))
                except Exception:
                    client.close()
                    client = Client(server, alice)
                    client.subscribe("broadcast", after=ids[-1] if ids else start)
                    healthy[index] = client
                    continue
                if message.get("stream") == "broadcast" and "id" in message:
                    ids.append(message["id"])
            results[index] = ids

        readers = [threading.Thread(target=read, args=(i, c)) for i, c in enumerate(healthy)]
        for reader in readers:
            reader.start()
        # 16 MB: more than the kernel buffers of both ends (up to ~10 MB here) plus the outbox.
        sent = [jobs.broadcast("bulk", {"n": i, "pad": big})[0].seq for i in range(80)]
        sent += [jobs.broadcast("bulk", {"n": 80 + i})[0].seq for i in range(total - 80)]
        for reader in readers:
            reader.join(timeout=90)
        assert [results.get(i) for i in range(len(healthy))] == [sent] * len(healthy)
        # The server dropped it. If its buffers had room left it was told why (4008: resume
        # from your cursor); a reader whose buffers were full only sees the connection end.
        assert stalled.close_code(timeout=30) in (4008, None)
    finally:
        stalled.close()
        for client in healthy:
            client.close()


def test_a_dead_peer_is_dropped_within_two_heartbeats(server, live_login_as):
    raw = RawClient(server, live_login_as(server, "alice", "alice-demo-pass"))
    before = health(server)["realtime"]["dead_peers"]
    # The raw client never answers pings (heartbeat is 1 s in these tests).
    deadline = time.monotonic() + 10
    while health(server)["realtime"]["dead_peers"] <= before:
        assert time.monotonic() < deadline, "dead peer not detected"
        time.sleep(0.2)
    raw.close()


def test_admission_control_refuses_sockets_with_503_and_pages_still_load(tmp_path, live_login_as):
    import websocket

    from tests.support.live import start_live_server
    from tests.support.sockets import cookie_header, ws_url

    server = start_live_server(tmp_path, workers=1, env={"REALTIME_MAX_SOCKETS": "2"})
    try:
        http = live_login_as(server, "alice", "alice-demo-pass")
        held = [Client(server, http), Client(server, http)]
        try:
            websocket.create_connection(ws_url(server), cookie=cookie_header(http),
                                        origin=server.url, timeout=5)
            raise AssertionError("the third socket was admitted")
        except websocket.WebSocketBadStatusException as exc:
            assert exc.status_code == 503
            assert int(exc.resp_headers["retry-after"]) > 0
        assert http.get(server.url + "/", timeout=5).status_code == 200
        assert health(server)["realtime"]["refused_capacity"] >= 1
        held[0].close()
        deadline = time.monotonic() + 10
        while True:
            try:
                Client(server, http).close()
                break
            except websocket.WebSocketBadStatusException:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        held[1].close()
    finally:
        server.stop()


def test_sigterm_closes_sockets_with_1001_and_the_worker_exits_promptly(tmp_path, live_login_as):
    """The open sockets do not hold the worker: it stops as soon as its HTTP requests are done.

    gunicorn waits up to ``graceful_timeout`` for in-flight requests, and here that is two
    minutes: a worker that waited for its sockets would take that long. The deadline below is
    generous for a loaded machine (a stop takes seconds) and still far below it."""
    from tests.support.live import start_live_server

    server = start_live_server(tmp_path, workers=1,
                               env={"GUNICORN_CMD_ARGS": "--graceful-timeout 120"})
    http = live_login_as(server, "alice", "alice-demo-pass")
    clients = [Client(server, http) for _ in range(3)]
    server.process.send_signal(15)
    closes = []
    for client in clients:
        closes.append(client.close_frame(timeout=30))
        client.close()
    server.process.wait(timeout=60)
    assert [code for code, _ in closes] == [1001, 1001, 1001]
    assert all(reason.startswith("restart; retry in ") for _, reason in closes), closes
    log = server.read_log()
    assert "Worker exiting" in log
    assert "SIGKILL" not in log and "WORKER TIMEOUT" not in log
