"""A client follows all its streams with one ``subscribe`` (issue 18): each stream is answered on
its own, a refused one costs the others nothing, and the heads are read with one query. Old
clients that subscribe one stream at a time see exactly what they always saw. A ``ping`` is
answered by the reactor, so a command stuck on the pool does not hold its pong back."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError

from flask_tidings import commands, messages
from tests.realtime.local import LocalClient, make_app


@pytest.fixture
def site(tmp_path):
    app, realtime, state = make_app(tmp_path, SWEEP_INTERVAL=3600)
    yield app, realtime, state
    state.stop()


def answers_until_barrier(client: LocalClient) -> list[dict]:
    """Every message up to the answer of a command sent now (commands answer in order)."""
    client.send({"type": "unsubscribe", "stream": "nothing", "ref": "barrier"})
    got = []
    while True:
        message = client.recv()
        if message.get("ref") == "barrier":
            return got
        got.append(message)


def count_reads(state, monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in ("head", "heads"):
        original = getattr(state.store, name)

        def read(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(state.store, name, read)
    return calls


def test_one_subscribe_follows_several_streams_with_one_heads_query(site, monkeypatch):
    _, realtime, state = site
    # Another user's socket sees the broadcast live, so the broker has delivered everything
    # published before it by the time it arrives. Otherwise, on a busy machine, the broadcast
    # may reach the hub after user 7 subscribed: its start is then fixed one earlier (it may
    # see an event from just before it asked, never miss one), a right answer but not this one.
    probe = LocalClient(state, "8")
    probe.send({"type": "subscribe", "stream": "broadcast", "ref": "probe"})
    assert probe.recv()["type"] == "subscribed"
    for n in range(3):
        realtime.publish("user:7", "note", {"n": n})
    realtime.publish("broadcast", "news", {})
    assert probe.recv()["id"] == 1
    probe.close()
    reads = count_reads(state, monkeypatch)
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "ref": "all",
                     "streams": [{"stream": "user:7", "after": 1}, "broadcast"]})
        got = answers_until_barrier(client)
        subscribed = {m["stream"]: m for m in got if m["type"] == "subscribed"}
        assert subscribed["user:7"] == {"type": "subscribed", "stream": "user:7", "head": 3,
                                        "after": 1, "ref": "all"}
        assert subscribed["broadcast"]["after"] == 1 and subscribed["broadcast"]["ref"] == "all"
        assert [m["id"] for m in got if m.get("stream") == "user:7" and "id" in m] == [2, 3]
        assert reads == ["heads"]
        # And both are live.
        realtime.publish("broadcast", "news", {"late": True})
        assert client.recv()["id"] == 2
    finally:
        client.close()


def test_a_forbidden_stream_among_allowed_ones_is_refused_alone(site):
    _, _, state = site
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "ref": "r",
                     "streams": ["user:7", "user:8", "broadcast"]})
        got = answers_until_barrier(client)
        assert sorted(m["stream"] for m in got if m["type"] == "subscribed") == [
            "broadcast", "user:7"]
        [refused] = [m for m in got if m["type"] == "error"]
        assert (refused["code"], refused["stream"], refused["ref"]) == ("forbidden", "user:8", "r")
        assert client.conn.followed == {"user:7", "broadcast"}
    finally:
        client.close()


def test_a_stream_named_twice_is_subscribed_once_from_its_first_entry(site):
    _, realtime, state = site
    for n in range(2):
        realtime.publish("broadcast", "news", {"n": n})
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "ref": "d",
                     "streams": ["broadcast", {"stream": "broadcast", "after": 0}]})
        got = answers_until_barrier(client)
        # From the head (the first entry), so no replay of the two stored events either.
        assert got == [{"type": "subscribed", "stream": "broadcast", "head": 2, "after": 2,
                        "ref": "d"}]
    finally:
        client.close()


@pytest.mark.parametrize("streams, why", [
    ([f"room:{n}" for n in range(messages.MAX_PER_SUBSCRIBE + 1)], "At most"),
    ([], "non-empty"),
    (["broadcast", {"stream": "user:7", "after": -1}], '"after"'),
    ("broadcast", "non-empty list"),
])
def test_a_malformed_or_oversized_subscribe_is_refused_whole(site, streams, why):
    _, _, state = site
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "ref": "x", "streams": streams})
        [error] = answers_until_barrier(client)
        assert (error["code"], error["ref"]) == ("bad_message", "x")
        assert why in error["message"]
        assert client.conn.followed == frozenset()
    finally:
        client.close()


def test_streams_past_the_connection_cap_are_refused_each_by_name(site, monkeypatch):
    _, _, state = site
    monkeypatch.setattr(commands, "MAX_STREAMS", 1)
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "ref": "c", "streams": ["user:7", "broadcast"]})
        got = answers_until_barrier(client)
        assert [m["stream"] for m in got if m["type"] == "subscribed"] == ["user:7"]
        [error] = [m for m in got if m["type"] == "error"]
        assert (error["code"], error["stream"]) == ("too_many_streams", "broadcast")
    finally:
        client.close()


def test_an_old_client_subscribing_one_stream_at_a_time_sees_what_it_always_did(site):
    _, realtime, state = site
    realtime.publish("user:7", "note", {})
    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "stream": "user:7", "after": 0, "ref": "1"})
        assert client.recv() == {"type": "subscribed", "stream": "user:7", "head": 1,
                                 "after": 0, "ref": "1"}
        assert client.recv()["id"] == 1
        client.send({"type": "subscribe", "stream": "user:8", "ref": "2"})
        # The single-stream form's errors keep their old shape (no "stream" field).
        assert client.recv() == {"type": "error", "code": "forbidden",
                                 "message": "You may not follow 'user:8'.", "ref": "2"}
        client.send({"type": "subscribe", "stream": "user:7", "ref": "3"})
        assert client.recv() == {"type": "subscribed", "stream": "user:7", "ref": "3",
                                 "after": 1}
    finally:
        client.close()


def test_when_the_heads_cannot_be_read_every_stream_says_so_and_heals_on_retry(site, monkeypatch):
    _, realtime, state = site
    realtime.publish("user:7", "note", {})
    original = state.store.heads
    failures = iter([True])

    def heads(names):
        if next(failures, False):
            raise OperationalError("SELECT /* heads */", {}, ConnectionError("gone"))
        return original(names)

    monkeypatch.setattr(state.store, "heads", heads)
    client = LocalClient(state, "7")
    try:
        request = {"type": "subscribe", "ref": "a",
                   "streams": [{"stream": "user:7", "after": 0}, "broadcast"]}
        client.send(request)
        errors = answers_until_barrier(client)
        assert sorted((m["code"], m["stream"], m["ref"]) for m in errors) == [
            ("unavailable", "broadcast", "a"), ("unavailable", "user:7", "a")]
        client.send({**request, "ref": "b"})
        got = answers_until_barrier(client)
        assert sorted((m["stream"], m["ref"]) for m in got if m["type"] == "subscribed") == [
            ("broadcast", "b"), ("user:7", "b")]
        assert [m["id"] for m in got if "id" in m] == [1]
    finally:
        client.close()


def test_a_ping_is_answered_while_the_clients_command_is_stuck_on_the_pool(site):
    app, realtime, state = site
    release = threading.Event()

    @realtime.on("slow")
    def slow(conn, data):
        release.wait(20)
        return "done"

    client = LocalClient(state, "7")
    try:
        client.send({"type": "slow", "ref": "s"})
        client.send({"type": "ping", "ref": "p"})
        assert client.recv() == {"type": "pong", "ref": "p"}
        release.set()
        assert client.recv() == {"type": "reply", "ref": "s", "data": "done"}
    finally:
        release.set()
        client.close()


def test_built_in_commands_build_no_request_context_but_site_handlers_do(site, monkeypatch):
    app, realtime, state = site
    built: list[str] = []
    original = app.request_context

    def request_context(environ):
        built.append(environ.get("PATH_INFO", ""))
        return original(environ)

    monkeypatch.setattr(app, "request_context", request_context)

    @realtime.on("whoami")
    def whoami(conn, data):
        from flask import request
        return request.path

    client = LocalClient(state, "7")
    try:
        client.send({"type": "subscribe", "streams": ["user:7", "broadcast"], "ref": 1})
        client.send({"type": "unsubscribe", "stream": "broadcast", "ref": 2})
        assert answers_until_barrier(client)[-1]["type"] == "unsubscribed"
        assert built == []
        client.send({"type": "whoami", "ref": 3})
        assert client.recv() == {"type": "reply", "ref": 3, "data": "/ws"}
        assert built == ["/ws"]
    finally:
        client.close()


@pytest.mark.parametrize("text, answered", [
    ('{"type":"ping","ref":7}', b'{"type":"pong","ref":7}'),
    ('{"type":"ping"}', b'{"type":"pong","ref":null}'),
    ('{"type":"ping","ref":true}', None),  # the pool answers bad_message
    ('{"type":"subscribe","stream":"ping"}', None),
    ('{"type":"ping","pad":"' + "x" * messages.PING_BYTES + '"}', None),
    ('["ping"]', None),
])
def test_only_small_well_formed_pings_are_answered_by_the_reactor(text, answered):
    frame = messages.pong_frame(text)
    assert (frame[2:] if frame else None) == answered


def test_a_ping_is_answered_while_every_pool_thread_is_busy_with_someone_else(tmp_path):
    """Issue 14: another user's commands hold the whole pool; a pong does not wait for them."""
    _, realtime, state = make_app(tmp_path, SWEEP_INTERVAL=3600, COMMAND_THREADS=1)
    release = threading.Event()
    started = threading.Event()

    @realtime.on("slow")
    def slow(conn, data):
        started.set()
        release.wait(20)
        return "done"

    busy, pinging = LocalClient(state, "7"), LocalClient(state, "8")
    try:
        busy.send({"type": "slow", "ref": "s"})
        assert started.wait(10)
        pinging.send({"type": "ping", "ref": "p"})
        assert pinging.recv() == {"type": "pong", "ref": "p"}
        release.set()
        assert busy.recv()["data"] == "done"
    finally:
        release.set()
        busy.close()
        pinging.close()
        state.stop()
