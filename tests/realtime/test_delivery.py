"""Store first, push second: live delivery, resume from a cursor, and fan-out across workers."""

from __future__ import annotations

from tests.support.sockets import Client, health, publisher


def test_a_background_job_notifies_a_connected_user(server, live_login_as):
    client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    try:
        stream = client.own_stream
        client.subscribe(stream)
        event = publisher(server).publish(stream, "notification", {"title": "Build finished"})
        [received] = client.events(1, stream)
        assert received["id"] == event.seq
        assert received["data"] == {"title": "Build finished"}
    finally:
        client.close()


def test_reconnecting_with_a_cursor_replays_exactly_what_was_missed(server, live_login_as):
    http = live_login_as(server, "bob", "bob-demo-pass")
    jobs = publisher(server)
    client = Client(server, http)
    stream = client.own_stream
    client.subscribe(stream)
    first = jobs.publish(stream, "notification", {"n": "before"})
    [seen] = client.events(1, stream)
    assert seen["id"] == first.seq
    client.close()

    missed = [jobs.publish(stream, "notification", {"n": i}).seq for i in range(20)]

    again = Client(server, http)
    try:
        reply = again.subscribe(stream, after=seen["id"])
        assert reply["type"] == "subscribed"
        replayed = again.events(20, stream)
        assert [m["id"] for m in replayed] == missed
        assert [m["data"]["n"] for m in replayed] == list(range(20))
        # And then live, with nothing shown twice.
        live = jobs.publish(stream, "notification", {"n": "live"})
        [after] = again.events(1, stream)
        assert after["id"] == live.seq == missed[-1] + 1
    finally:
        again.close()


def test_two_tabs_of_one_user_both_receive(server, live_login_as):
    http = live_login_as(server, "alice", "alice-demo-pass")
    tabs = [Client(server, http), Client(server, http)]
    try:
        stream = tabs[0].own_stream
        for tab in tabs:
            tab.subscribe(stream)
        event = publisher(server).publish(stream, "notification", {"title": "both"})
        for tab in tabs:
            assert tab.events(1, stream)[0]["id"] == event.seq
    finally:
        for tab in tabs:
            tab.close()


def clients_on_both_workers(server, http, attempts=40) -> list[Client]:
    """Open sockets until two of them are held by different workers."""
    by_worker: dict[str, Client] = {}
    for _ in range(attempts):
        client = Client(server, http)
        if client.worker in by_worker:
            # Closed at once: kept open, 20 of them on one worker reach the per-user cap (429).
            client.close()
        else:
            by_worker[client.worker] = client
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, "the kernel never gave a socket to the second worker"
    return list(by_worker.values())


def test_with_redis_a_notify_reaches_the_users_sockets_in_every_worker(redis_server, live_login_as):
    http = live_login_as(redis_server, "alice", "alice-demo-pass")
    clients = clients_on_both_workers(redis_server, http)
    try:
        stream = clients[0].own_stream
        for client in clients:
            client.subscribe(stream)
            client.subscribe("broadcast")
        jobs = publisher(redis_server)
        note = jobs.notify(stream.split(":")[1], "notification", {"title": "hi"})
        [everyone] = jobs.broadcast("announcement", {"title": "all hands"})
        for client in clients:
            got = client.events(2)
            assert {(m["stream"], m["id"]) for m in got} == {
                (stream, note.seq), ("broadcast", everyone.seq)}
    finally:
        for client in clients:
            client.close()


def test_several_workers_without_a_broker_still_deliver_everything(tmp_path, live_login_as):
    from tests.support.live import start_live_server

    server = start_live_server(tmp_path, workers=2, env={"REALTIME_POLL_INTERVAL": "0.05"})
    try:
        assert server.read_log().count("Booting worker") >= 2
        http = live_login_as(server, "alice", "alice-demo-pass")
        clients = clients_on_both_workers(server, http)
        for client in clients:
            client.subscribe("broadcast")
        jobs = publisher(server)
        sent = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(5)]
        for client in clients:
            assert [m["id"] for m in client.events(5, "broadcast")] == sent
        for client in clients:
            client.close()
    finally:
        server.stop()


def test_an_in_process_broker_with_several_workers_refuses_to_start(tmp_path):
    """`gunicorn -w 2` with REALTIME_BROKER=memory would confine messages to one worker: the
    server stops at boot with a message that says how to fix it, instead of silently losing."""
    import pytest

    from tests.support.live import start_live_server

    with pytest.raises(RuntimeError) as failure:
        start_live_server(tmp_path, workers=2, env={"REALTIME_BROKER": "memory"})
    assert "REALTIME_BROKER=memory cannot serve 2 workers" in str(failure.value)


def test_one_worker_without_redis_fans_out_in_process(server, live_login_as):
    """The embedded default: a message published inside the worker (a chat send) reaches the
    other member's socket through the in-process broker, at once, not via the log sweep."""
    import re

    alice_http = live_login_as(server, "alice", "alice-demo-pass")
    page = alice_http.get(server.url + "/chat/", timeout=10)
    room = int(re.search(r"/chat/(\d+)", page.url + page.text).group(1))
    alice, bob = Client(server, alice_http), Client(server, live_login_as(server, "bob", "bob-demo-pass"))
    try:
        assert alice.subscribe(f"room:{room}")["type"] == "subscribed"
        assert bob.subscribe(f"room:{room}")["type"] == "subscribed"
        assert health(server)["realtime"]["broker"]["kind"] == "local"
        alice.send({"type": "chat.send", "ref": "s1",
                    "data": {"room": room, "body": "in process", "client_id": "c1"}})
        [event] = bob.events(1, f"room:{room}")
        assert event["type"] == "chat.message" and event["data"]["body"] == "in process"
        # Delivered by the broker, not caught up from the log by the sweep.
        assert health(server)["realtime"]["delivered_live"] >= 1
    finally:
        alice.close()
        bob.close()
