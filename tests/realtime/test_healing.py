"""Streams that heal (issue 17.1): a database error anywhere in subscribe or catch-up never leaves
a stream silent while its socket stays up.

The fault test first records every database call that a subscribe and its catch-up make, then
replays the same story once per call with exactly that call failing, and checks that the client
ends up with every event, once, in order, and live. It does so three times over, each time with
only one way of repairing available: the sweep, a later event, or the client's own retry.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from tests.realtime.local import LocalClient, make_app, postgres_url  # noqa: F401
from tests.support.sockets import Client, publisher

#: The store's reads that subscribe, catch-up, the sweep and the PostgreSQL listener make.
READS = ("head", "heads", "read_since", "seq_at", "payload")

#: Upper bound for one story; generous for a loaded machine, not a speed goal.
BOUND = 20.0


class FlakyStore:
    """The app's store, with reads that fail when told to.

    ``fail`` holds the indexes (0, 1, 2 ...) of the calls concerning ``stream`` that raise, as
    a database that just dropped the connection would; ``down_until`` fails every read until
    then. ``calls`` records, in order, the reads about ``stream``.
    """

    def __init__(self, store, monkeypatch):
        self.lock = threading.Lock()
        self.stream = ""
        self.fail: set[int] = set()
        self.down_until = 0.0
        self.calls: list[str] = []
        self.where: list[tuple] = []  # (read, thread, arguments): for a failure's message
        for name in READS:
            monkeypatch.setattr(store, name, self._wrap(name, getattr(store, name)))

    def arm(self, stream: str, fail: set[int] = frozenset(), down_for: float = 0.0) -> None:
        with self.lock:
            self.stream, self.fail, self.calls = stream, set(fail), []
            self.where = []
            self.down_until = time.monotonic() + down_for if down_for else 0.0

    def _wrap(self, name, original):
        def read(*args, **kwargs):
            concerned = args[0] == self.stream or (
                isinstance(args[0], list) and self.stream in args[0])
            with self.lock:
                down = time.monotonic() < self.down_until
                index = len(self.calls)
                if concerned and name != "heads":
                    self.calls.append(name)
                    self.where.append((name, threading.current_thread().name, args[1:]))
            if down or (concerned and name != "heads" and index in self.fail):
                raise OperationalError(f"SELECT ... /* {name} */", {},
                                       ConnectionError("server closed the connection"))
            return original(*args, **kwargs)

        return read


def story(realtime, state, flaky, user: str, after: int | None, mode: str,
          fail: set[int] = frozenset(), down_for: float = 0.0) -> dict:
    """A user subscribes to a stream with five stored events while the database misbehaves.

    ``mode`` says what may repair the stream: ``sweep`` (nothing else happens), ``event`` (new
    events keep coming, no sweep) or ``retry`` (the client subscribes again after an error frame,
    as realtime.js does; no sweep, no events). Returns what the client saw.
    """
    stream = f"user:{user}"
    backlog = [realtime.publish(stream, "note", {"n": n}).seq for n in range(5)]
    flaky.arm(stream, fail, down_for)
    client = LocalClient(state, user)
    request = {"type": "subscribe", "stream": stream, "ref": "first"}
    if after is not None:
        request["after"] = after
    client.send(request)
    # From a cursor: exactly what follows it. Without one: what comes after the request, and
    # (if the subscribe failed and was fixed late) perhaps the backlog's last events before it.
    expected = backlog[after:] if after is not None else []
    seen: dict[str, list] = {"ids": [], "errors": [], "subscribed": [], "resets": []}
    live: list[int] = []
    retry_at = None
    next_event = time.monotonic() + 0.3
    deadline = time.monotonic() + BOUND

    def complete() -> bool:
        if not seen["subscribed"]:
            return False
        start = seen["subscribed"][0]["after"]
        if after is not None:
            assert start == after, seen
        assert start <= backlog[-1], seen  # never later than where the stream stood when asked
        return seen["ids"] == [seq for seq in backlog if seq > start] + live

    try:
        while not (complete() and (mode != "event" or len(live) >= 4)):
            assert time.monotonic() < deadline, (
                f"stream never healed: {seen}, live={live}, calls={flaky.calls}")
            try:
                message = client.recv(timeout=0.05)
            except AssertionError:
                message = None
            if message is not None:
                kind = message.get("type")
                if kind == "error":
                    seen["errors"].append(message)
                    retry_at = time.monotonic() + 0.2
                elif kind == "subscribed":
                    seen["subscribed"].append(message)
                elif kind == "reset":
                    seen["resets"].append(message)
                elif "id" in message:
                    seen["ids"].append(message["id"])
            now = time.monotonic()
            if mode == "retry" and retry_at is not None and now >= retry_at:
                retry_at = None
                client.send({"type": "subscribe", "stream": stream, "ref": "again"})
            if mode == "event" and (len(live) < 4 or not complete()) and now >= next_event:
                live.append(realtime.publish(stream, "note", {"live": len(live)}).seq)
                next_event = now + 0.25
        # And it is live: the next event arrives by itself, next in line.
        last = realtime.publish(stream, "note", {"last": True}).seq
        while True:
            try:
                message = client.recv(timeout=BOUND)
            except AssertionError:
                where = client.conn.streams[stream]
                raise AssertionError(
                    f"not live after healing: stream state "
                    f"{ {k: getattr(where, k) for k in where.__slots__} }, failed reads {fail}, "
                    f"reads {flaky.where}, client saw {seen}, last event {last}") from None
            if "id" in message:
                assert message["id"] == last, (message, seen)
                break
    finally:
        client.close()
    assert seen["resets"] == []
    return seen


def every_failure(run, depth: int) -> int:
    """Run the story failing each database call in turn; then, for each of those runs, each
    call of the repair that followed, and so on ``depth`` failures deep. Returns the runs."""
    runs = 0
    frontier: list[frozenset[int]] = [frozenset()]
    for level in range(depth + 1):
        deeper = []
        for fail in frontier:
            calls = run(fail)
            runs += 1
            first = max(fail) + 1 if fail else 0
            deeper += [fail | {index} for index in range(first, len(calls))]
        frontier = deeper
    return runs


@pytest.mark.parametrize("mode", ["sweep", "event", "retry"])
def test_a_failure_at_any_database_call_of_a_subscribe_heals(tmp_path, monkeypatch, mode):
    """Each mode leaves one way of repairing: the sweep, new events, or the client's retry."""
    _, realtime, state = make_app(
        tmp_path, REPLAY_PAGE=2, SWEEP_INTERVAL=0.2 if mode == "sweep" else 3600)
    try:
        flaky = FlakyStore(state.store, monkeypatch)
        users = (f"{mode}-{n}" for n in range(1000))
        for after in (1, None):

            def run(fail: frozenset[int], after=after) -> list[str]:
                seen = story(realtime, state, flaky, next(users), after, mode, fail=fail)
                if 0 in fail:  # the subscribe itself failed: its answer says so, with its ref
                    first = seen["errors"][0]
                    assert first["code"] == "unavailable" and first["ref"] == "first", seen
                    assert first["stream"].startswith("user:")
                return list(flaky.calls)

            # Without failures: the head, then (from a cursor) pages of the log.
            clean = run(frozenset())
            assert clean[0] == "head" and (after is None or "read_since" in clean), clean
            # Two failures deep: each read of the repair that follows a failure fails in turn.
            assert every_failure(run, depth=2 if mode == "sweep" else 1) > len(clean)
            # Failures in a row (the database gone for a while) heal just the same.
            story(realtime, state, flaky, next(users), after, mode, fail=frozenset(range(6)))
    finally:
        state.stop()


def test_a_stream_heals_after_the_database_was_down_for_a_while(tmp_path, monkeypatch):
    """Every read fails for a second and a half, the sweep's own included; then it heals."""
    _, realtime, state = make_app(tmp_path, REPLAY_PAGE=2)
    try:
        flaky = FlakyStore(state.store, monkeypatch)
        seen = story(realtime, state, flaky, "patient", 1, "sweep", down_for=1.5)
        assert seen["errors"] and seen["errors"][0]["ref"] == "first"
    finally:
        state.stop()


def test_renaming_the_stream_table_while_a_user_subscribes_loses_them_nothing(
        server, live_login_as):
    """The issue's repro: for a moment the log cannot be read while alice subscribes. She is
    told (an error with her subscribe's ref), and still gets the next five broadcasts, as bob,
    who subscribed before, does."""
    bob = Client(server, live_login_as(server, "bob", "bob-demo-pass"))
    alice = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
    database = server.env["DATABASE_URL"].removeprefix("sqlite:///")
    try:
        bob.subscribe("broadcast")
        with sqlite3.connect(database, timeout=10) as db:
            db.execute("ALTER TABLE realtime_streams RENAME TO realtime_streams_away")
        try:
            reply = alice.subscribe("broadcast")
        finally:
            with sqlite3.connect(database, timeout=10) as db:
                db.execute("ALTER TABLE realtime_streams_away RENAME TO realtime_streams")
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        jobs = publisher(server)
        sent = [jobs.broadcast("announcement", {"n": n})[0].seq for n in range(5)]
        assert [m["id"] for m in bob.events(5, "broadcast")] == sent
        assert [m["id"] for m in alice.events(5, "broadcast")] == sent
    finally:
        alice.close()
        bob.close()


def test_a_failed_payload_lookup_of_the_postgresql_listener_heals(tmp_path, monkeypatch,
                                                                  postgres_url):
    """An event too large for NOTIFY is announced by id and read back by each listener; that
    read failing once must not cost the follower the event."""
    _, realtime, state = make_app(tmp_path, DATABASE_URL=postgres_url, BROKER="postgres",
                                  WORKERS=2)
    try:
        client = LocalClient(state, "big")
        client.send({"type": "subscribe", "stream": client.stream, "ref": "s"})
        assert client.recv()["type"] == "subscribed"
        failed = []

        def payload_fails_once(stream, seq, _real=state.store.payload):
            if not failed:
                failed.append(seq)
                raise OperationalError("SELECT payload", {}, ConnectionError("dropped"))
            return _real(stream, seq)

        monkeypatch.setattr(state.store, "payload", payload_fails_once)
        big = realtime.publish(client.stream, "note", {"pad": "x" * 20000})
        small = realtime.publish(client.stream, "note", {"pad": "y"})
        got = []
        deadline = time.monotonic() + BOUND
        while len(got) < 2:
            assert time.monotonic() < deadline, got
            message = client.recv(timeout=BOUND)
            if "id" in message:
                got.append(message["id"])
        assert failed == [big.seq] and got == [big.seq, small.seq]
        client.close()
    finally:
        state.stop()
