"""Chat over real sockets: a real gunicorn with two workers fanning out through Redis, and
several logged-in clients behaving (and misbehaving) like browser tabs."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from typing import Any

import pytest
import requests
import websocket
from sqlalchemy import create_engine, text

from tests.support import services
from tests.support.live import LiveServer, live_login, start_live_server
from tests.support.sockets import Client

PASSWORDS = {"alice": "alice-demo-pass", "bob": "bob-demo-pass", "admin": "admin-demo-pass"}
_refs = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(
        tmp_path_factory.mktemp("chat"),
        workers=2,
        env={
            "REDIS_URL": services.REDIS_URL,
            "REALTIME_REDIS_CHANNEL": f"tidings-chat-test-{os.getpid()}-{time.time_ns()}",
            "CHAT_PRESENCE_TTL": "3",
            "REALTIME_HEARTBEAT": "2",
            # Several tests send from the same accounts within seconds; the limit itself is
            # covered by test_chat.py.
            "CHAT_RATE_COUNT": "100",
        },
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def http(server) -> dict[str, requests.Session]:
    return {name: live_login(server, name, password) for name, password in PASSWORDS.items()}


def form_post(server: LiveServer, session: requests.Session, path: str, data: dict) -> str:
    """POST a chat form with the CSRF token of the chat page; return the redirect target."""
    page = session.get(server.url + "/chat/", timeout=10).text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = session.post(server.url + path, data={"csrf_token": token, **data},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:500]
    return response.headers["Location"]


@pytest.fixture(scope="module")
def rooms(server, http) -> dict[str, int]:
    """A private room of alice and bob, and a public room everyone may follow."""
    private = form_post(server, http["alice"], "/chat/rooms",
                        {"name": "team", "kind": "private", "invite": "bob"})
    public = form_post(server, http["alice"], "/chat/rooms", {"name": "town", "kind": "public"})
    return {"private": int(private.rstrip("/").rsplit("/", 1)[1]),
            "public": int(public.rstrip("/").rsplit("/", 1)[1])}


def count_messages(server: LiveServer) -> int:
    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM chat_messages")).scalar_one()
    finally:
        engine.dispose()


class Tab:
    """A socket that keeps events it was not waiting for, so replies and events can interleave."""

    def __init__(self, server: LiveServer, session: requests.Session):
        self.client = Client(server, session)
        self.worker = self.client.worker
        self.user_id = int(self.client.welcome["user"])
        self.inbox: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        # Not Client.recv: it skips heartbeats without looking at the clock, so with a 2 s
        # heartbeat a message that never comes would hang the test instead of failing it.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; unclaimed: {self.inbox[-5:]}")
            self.client.ws.settimeout(remaining)
            try:
                message = json.loads(self.client.ws.recv())
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"timed out; unclaimed: {self.inbox[-5:]}") from None
            if message.get("type") != "hb":
                return message

    def wait(self, match, timeout: float = 10.0) -> dict[str, Any]:
        for i, message in enumerate(self.inbox):
            if match(message):
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if match(message):
                return message
            self.inbox.append(message)

    def command(self, type_: str, data: Any = None) -> dict[str, Any]:
        """Send a command; return its reply or error frame."""
        ref = f"r{next(_refs)}"
        self.client.send({"type": type_, "ref": ref, "data": data})
        return self.wait(lambda m: m.get("ref") == ref and m["type"] in ("reply", "error"))

    def follow(self, room_id: int, after: int | None = None) -> dict[str, Any]:
        ref = f"s{next(_refs)}"
        message: dict[str, Any] = {"type": "subscribe", "stream": f"room:{room_id}", "ref": ref}
        if after is not None:
            message["after"] = after
        self.client.send(message)
        return self.wait(lambda m: m.get("ref") == ref)

    def event(self, type_: str, room_id: int, where=lambda data: True, timeout: float = 10.0):
        return self.wait(lambda m: m["type"] == type_ and m.get("stream") == f"room:{room_id}"
                         and where(m["data"]), timeout)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def tabs(server, http):
    opened: list[Tab] = []

    def open_tab(name: str) -> Tab:
        tab = Tab(server, http[name])
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


def names(online: list[dict[str, Any]]) -> set[str]:
    return {user["name"] for user in online}


def test_three_members_see_every_message_once_in_the_same_order(server, rooms, tabs):
    room = rooms["public"]
    alice, bob, admin = tabs("alice"), tabs("bob"), tabs("admin")
    for tab in (alice, bob, admin):
        assert tab.follow(room)["type"] == "subscribed"
    sent = []
    for i in range(4):
        for tab, who in ((alice, "alice"), (bob, "bob")):
            reply = tab.command("chat.send", {"room": room, "body": f"{who} {i}",
                                              "client_id": f"{who}-{i}"})
            assert reply["type"] == "reply", reply
            assert reply["data"]["message"]["client_id"] == f"{who}-{i}"
            sent.append(reply["data"]["message"]["id"])
    assert sent == sorted(sent)
    for tab in (alice, bob, admin):
        got = [tab.event("chat.message", room) for _ in sent]
        assert [m["data"]["id"] for m in got] == sent
        # Stream ids are the room's own sequence, distinct from message ids, and gap-free.
        assert [m["id"] for m in got] == list(range(got[0]["id"], got[0]["id"] + len(sent)))
        assert got[0]["data"]["user"]["name"] == "alice" and got[0]["data"]["body"] == "alice 0"
        # The echo carries the sender's client_id, so its pending copy is replaced, not doubled.
        assert got[1]["data"]["client_id"] == "bob-0"


def test_history_and_resume_meet_without_gaps_or_doubles(server, http, rooms, tabs):
    room = rooms["private"]
    alice = tabs("alice")
    alice.follow(room)
    first = alice.command("chat.send", {"room": room, "body": "before the page"})
    page = http["bob"].get(f"{server.url}/chat/{room}", timeout=10).text
    head = int(page.split('data-room-head="', 1)[1].split('"', 1)[0])
    assert f'data-id="{first["data"]["message"]["id"]}"' in page
    after = alice.command("chat.send", {"room": room, "body": "after the page"})
    bob = tabs("bob")
    bob.follow(room, after=head)
    replayed = bob.event("chat.message", room)
    assert replayed["data"]["id"] == after["data"]["message"]["id"]


def test_a_non_member_can_neither_read_nor_post_in_a_private_room(server, http, rooms, tabs):
    room = rooms["private"]
    before = count_messages(server)
    admin = tabs("admin")  # an admin, but not a member of "team"
    refused = admin.follow(room)
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    for type_, data in (("chat.send", {"room": room, "body": "let me in"}),
                        ("chat.typing", {"room": room}),
                        ("chat.presence", {"room": room}),
                        ("chat.read", {"room": room, "message": 1})):
        answer = admin.command(type_, data)
        assert (answer["type"], answer["code"]) == ("error", "forbidden"), (type_, answer)
    for path in (f"/chat/{room}", f"/chat/{room}/messages"):
        response = http["admin"].get(server.url + path, headers={"Accept": "application/json"},
                                     timeout=10)
        assert response.status_code in (403, 404)
    assert count_messages(server) == before


def test_hostile_frames_get_error_frames_and_change_nothing(server, rooms, tabs):
    room, public = rooms["private"], rooms["public"]
    bob = tabs("bob")  # a member, trying everything a hand-written client could
    before = count_messages(server)
    cases = [
        ("chat.send", None, "bad_message"),
        ("chat.send", "hello", "bad_message"),
        ("chat.send", [room, "hi"], "bad_message"),
        ("chat.send", {"body": "no room"}, "bad_message"),
        ("chat.send", {"room": str(room), "body": "hi"}, "bad_message"),
        ("chat.send", {"room": True, "body": "hi"}, "bad_message"),
        ("chat.send", {"room": 1.5, "body": "hi"}, "bad_message"),
        ("chat.send", {"room": 10**30, "body": "hi"}, "forbidden"),
        ("chat.send", {"room": -1, "body": "hi"}, "forbidden"),
        ("chat.send", {"room": 987654, "body": "hi"}, "forbidden"),
        ("chat.send", {"room": room}, "bad_message"),
        ("chat.send", {"room": room, "body": {"$gt": ""}}, "bad_message"),
        ("chat.send", {"room": room, "body": "   \n "}, "empty"),
        ("chat.send", {"room": room, "body": "x" * 60000}, "too_long"),
        ("chat.send", {"room": room, "body": "hi", "client_id": "c" * 5000}, "bad_message"),
        ("chat.send", {"room": room, "body": "hi", "client_id": 7}, "bad_message"),
        # Echoed to every member's page, so only a short token: no "__proto__" and friends.
        ("chat.send", {"room": room, "body": "hi", "client_id": "__proto__"}, "bad_message"),
        ("chat.send", {"room": room, "body": "hi", "client_id": "a b<i>"}, "bad_message"),
        # Ids no row can have are refusals, never an overflow in the driver (a 500 before).
        ("chat.read", {"room": room, "message": 10**20}, "bad_message"),
        ("chat.delete", {"message": 10**20}, "bad_message"),
        ("chat.edit", {"message": 10**20, "body": "x"}, "bad_message"),
        ("chat.edit", {"message": "1; DROP", "body": "x"}, "bad_message"),
        ("chat.edit", {"message": 1, "body": "not mine"}, "forbidden"),
        ("chat.typing", {"room": 10**20}, "forbidden"),
        ("chat.delete", {"message": 1}, "forbidden"),  # bob is no admin
        ("chat.typing", {"room": "1 OR 1=1"}, "bad_message"),
        ("chat.presence", [], "bad_message"),
        ("chat.read", {"room": public, "message": "all"}, "bad_message"),
    ]
    for type_, data, code in cases:
        answer = bob.command(type_, data)
        assert (answer["type"], answer.get("code")) == ("error", code), (type_, data, answer)
    for stream in ("room:abc", "room:", "room:-1", f"room:{room}x", "room:99999999999999999999"):
        bob.client.send({"type": "subscribe", "stream": stream, "ref": stream})
        answer = bob.wait(lambda m, s=stream: m.get("ref") == s)
        assert (answer["type"], answer["code"]) == ("error", "forbidden"), answer
    assert count_messages(server) == before
    # The socket is still fine afterwards.
    assert bob.command("chat.send", {"room": room, "body": "still here"})["type"] == "reply"


def test_typing_reaches_the_other_member_with_what_the_client_needs(rooms, tabs):
    room = rooms["private"]
    alice, bob = tabs("alice"), tabs("bob")
    alice.follow(room)
    bob.follow(room)
    assert bob.command("chat.typing", {"room": room})["type"] == "reply"
    event = alice.event("chat.typing", room)
    assert "id" not in event  # ephemeral: never stored, never replayed
    assert event["data"]["name"] == "bob"
    assert event["data"]["user"] == bob.user_id
    assert event["data"]["expires_in"] > 0


def test_presence_shows_both_members_then_drops_a_closed_socket(rooms, tabs):
    room = rooms["private"]
    alice, bob = tabs("alice"), tabs("bob")
    alice.follow(room)
    bob.follow(room)
    assert names(alice.command("chat.presence", {"room": room})["data"]["online"]) >= {"alice"}
    answer = bob.command("chat.presence", {"room": room})["data"]["online"]
    assert names(answer) == {"alice", "bob"}
    alice.event("chat.presence", room, lambda d: names(d["online"]) == {"alice", "bob"})
    alice.inbox.clear()  # an earlier {"alice"} list must not count as the drop
    bob.close()
    alice.event("chat.presence", room, lambda d: names(d["online"]) == {"alice"})


def test_an_admin_deletes_a_message_and_only_a_tombstone_stays(server, http, rooms, tabs):
    room = rooms["public"]
    alice, bob, admin = tabs("alice"), tabs("bob"), tabs("admin")
    for tab in (alice, bob):
        tab.follow(room)
    message = alice.command("chat.send", {"room": room, "body": "oops, a secret"})
    message_id = message["data"]["message"]["id"]
    assert admin.command("chat.delete", {"message": message_id})["type"] == "reply"
    for tab in (alice, bob):
        assert tab.event("chat.deleted", room)["data"]["message"] == message_id
    history = http["bob"].get(f"{server.url}/chat/{room}/messages", timeout=10).json()
    [tombstone] = [m for m in history["messages"] if m["id"] == message_id]
    assert tombstone["deleted"] is True and tombstone["body"] == ""
    assert "oops, a secret" not in http["bob"].get(f"{server.url}/chat/{room}", timeout=10).text


def test_a_resent_client_id_answers_the_first_message_and_publishes_nothing_new(rooms, tabs):
    room = rooms["private"]
    alice, bob = tabs("alice"), tabs("bob")
    bob.follow(room)
    frame = {"room": room, "body": "exactly once", "client_id": "c-lost-reply-1"}
    first = alice.command("chat.send", frame)
    again = alice.command("chat.send", frame)  # the page never saw the first reply
    assert first["type"] == again["type"] == "reply"
    assert again["data"]["message"]["id"] == first["data"]["message"]["id"]
    event = bob.event("chat.message", room, lambda d: d["body"] == "exactly once")
    assert event["data"]["client_id"] == "c-lost-reply-1"
    marker = alice.command("chat.send", {"room": room, "body": "after it"})
    assert marker["type"] == "reply"
    # The next thing bob gets is the marker: the resend published nothing.
    nxt = bob.event("chat.message", room)
    assert nxt["data"]["body"] == "after it"


def test_edits_and_deletes_reach_the_other_member_live(rooms, tabs):
    room = rooms["private"]
    alice, bob = tabs("alice"), tabs("bob")
    bob.follow(room)
    sent = alice.command("chat.send", {"room": room, "body": "lunch at 12?"})["data"]["message"]
    hijack = bob.command("chat.edit", {"message": sent["id"], "body": "hijack"})
    assert hijack["code"] == "forbidden"
    edited = alice.command("chat.edit", {"message": sent["id"], "body": "lunch at 1?"})
    assert edited["data"]["message"]["edited_at"]
    event = bob.event("chat.edited", room)
    assert (event["data"]["id"], event["data"]["body"]) == (sent["id"], "lunch at 1?")
    assert alice.command("chat.delete", {"message": sent["id"]})["type"] == "reply"
    assert bob.event("chat.deleted", room)["data"]["message"] == sent["id"]


def test_reading_in_one_tab_tells_the_users_other_tabs_the_new_count(rooms, tabs):
    room = rooms["private"]
    bob, alice_here, alice_there = tabs("bob"), tabs("alice"), tabs("alice")
    own = alice_there.client.own_stream
    alice_there.client.send({"type": "subscribe", "stream": own, "ref": "own"})
    alice_there.wait(lambda m: m.get("ref") == "own")
    sent = bob.command("chat.send", {"room": room, "body": "unread for alice"})
    message_id = sent["data"]["message"]["id"]
    assert alice_here.command("chat.read", {"room": room, "message": message_id})["type"] == "reply"
    read = alice_there.wait(lambda m: m["type"] == "chat.read" and m.get("stream") == own
                            and m["data"]["room"] == room)
    assert read["data"]["unread"] == 0 and read["data"]["last_read"] >= message_id
    assert read["data"]["through"] >= message_id


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """The shipped limits, tightened to the issue's numbers: 5 messages, no refill in the test."""
    live = start_live_server(tmp_path_factory.mktemp("chat-strict"), workers=2,
                             env={"CHAT_RATE_COUNT": "5", "CHAT_RATE_WINDOW": "3600",
                                  "CHAT_ROOMS_PER_HOUR": "3"})
    yield live
    live.stop()


def test_sixteen_simultaneous_sends_in_two_workers_pass_a_limit_of_five_five_times(strict_server):
    server = strict_server
    http = live_login(server, "bob", PASSWORDS["bob"])
    room = int(form_post(server, http, "/chat/rooms", {"name": "race", "kind": "public"})
               .rstrip("/").rsplit("/", 1)[1])
    sockets = [Tab(server, http) for _ in range(16)]
    try:
        assert len({tab.worker for tab in sockets}) == 2, "every worker takes part"
        barrier = threading.Barrier(len(sockets))
        answers: list[dict[str, Any]] = []

        def send(tab: Tab, n: int) -> None:
            barrier.wait()
            answers.append(tab.command("chat.send", {"room": room, "body": f"at once {n}"}))

        threads = [threading.Thread(target=send, args=(tab, n)) for n, tab in enumerate(sockets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        kinds = sorted(a["type"] if a["type"] == "reply" else a["code"] for a in answers)
        assert kinds == ["rate_limited"] * 11 + ["reply"] * 5
        refusal = next(a for a in answers if a["type"] == "error")
        assert "Try again in" in refusal["message"]
    finally:
        for tab in sockets:
            tab.close()
    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM chat_messages WHERE room_id = :r"),
                                  {"r": room}).scalar_one()
    finally:
        engine.dispose()
    assert stored == 5


def test_simultaneous_room_creation_stops_at_the_hourly_limit(strict_server):
    server = strict_server
    http = live_login(server, "alice", PASSWORDS["alice"])
    token = http.get(server.url + "/chat/", timeout=10).text.split(
        'name="csrf_token" value="', 1)[1].split('"', 1)[0]
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def create(n: int) -> None:
        barrier.wait()
        response = http.post(server.url + "/chat/rooms", timeout=30,
                             headers={"Accept": "application/json"},
                             data={"csrf_token": token, "name": f"mass-{n}", "kind": "public"},
                             allow_redirects=False)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [302] * 3 + [429] * 5


def test_users_of_a_killed_worker_drop_out_of_presence(server, http, rooms, tabs):
    """Runs last in this module: it SIGKILLs one worker (gunicorn starts a new one)."""
    room = rooms["public"]
    alice = tabs("alice")
    bob = None
    for _ in range(30):  # find a socket for bob on the other worker
        candidate = tabs("bob")
        if candidate.worker != alice.worker:
            bob = candidate
            break
        candidate.close()
    if bob is None:
        pytest.skip("could not get sockets on two different workers")
    alice.follow(room)
    bob.follow(room)
    alice.command("chat.presence", {"room": room})
    assert names(bob.command("chat.presence", {"room": room})["data"]["online"]) == {"alice", "bob"}
    alice.event("chat.presence", room, lambda d: names(d["online"]) == {"alice", "bob"})
    alice.inbox.clear()  # an earlier {"alice"} list must not count as the drop

    os.kill(bob.client.pid, signal.SIGKILL)
    # Nobody runs bob's disconnect hook: only the expiry can take him out.
    dropped = alice.event("chat.presence", room, lambda d: names(d["online"]) == {"alice"},
                          timeout=15)
    assert dropped["data"]["room"] == room
