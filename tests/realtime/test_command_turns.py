"""One user's sockets share a couple of the command pool's threads, so a user who sends from
many sockets at once waits for their own turn and everybody else's commands still run at once
(flask_tidings.commands.PER_USER; bench.attacks "chat-burst")."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import SimpleNamespace

import pytest

from flask_tidings import commands
from flask_tidings.commands import PER_USER, CommandRunner


class FakeConnection:
    """Just what the runner touches: an identity, a command queue, the scheduling flag."""

    def __init__(self, runner: CommandRunner, user: str, name: str):
        self.id, self.identity = name, SimpleNamespace(user_id=user)
        self.runner = runner
        self._commands: deque = deque()
        self._scheduled = False
        self._lock = threading.Lock()

    def push_command(self, command) -> None:
        with self._lock:
            self._commands.append(command)
            if self._scheduled:
                return
            self._scheduled = True
        self.runner.schedule(self)

    def pop_command(self):
        with self._lock:
            if self._commands:
                return self._commands.popleft()
            self._scheduled = False
            return None

    def send_json(self, message) -> None:  # a command that raised
        pass


@pytest.fixture
def runner(monkeypatch):
    """A pool of 6 threads whose commands are ("user", n, gate): each waits for its gate."""
    state = {"running": {}, "most": {}, "done": [], "lock": threading.Lock()}

    def handle(ext, st, conn, command):
        user, n, gate = command
        with state["lock"]:
            state["running"][user] = state["running"].get(user, 0) + 1
            state["most"][user] = max(state["most"].get(user, 0), state["running"][user])
        try:
            assert gate.wait(10), "the test never opened this command's gate"
        finally:
            with state["lock"]:
                state["running"][user] -= 1
                state["done"].append((user, conn.id, n))

    monkeypatch.setattr(commands, "_handle", handle)
    pool = CommandRunner(ext=None, state=None, threads=6)
    pool.record = state
    yield pool
    pool.shutdown()
    pool.pool.shutdown(wait=True)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_a_user_sending_from_many_sockets_at_once_does_not_take_the_whole_pool(runner):
    record = runner.record
    flood_gate = threading.Event()
    mallory = [FakeConnection(runner, "mallory", f"m{i}") for i in range(16)]
    for i, conn in enumerate(mallory):
        conn.push_command(("mallory", i, flood_gate))

    # Mallory's 16 sockets each sent a message at the same instant: two of them run.
    assert wait_for(lambda: record["running"].get("mallory") == PER_USER)
    time.sleep(0.1)
    assert record["running"]["mallory"] == PER_USER

    # Alice sends from her one socket meanwhile: her command runs at once, not after 16 others.
    alice_gate = threading.Event()
    alice_gate.set()
    alice = FakeConnection(runner, "alice", "a0")
    alice.push_command(("alice", 0, alice_gate))
    assert wait_for(lambda: ("alice", "a0", 0) in record["done"])
    assert len([d for d in record["done"] if d[0] == "mallory"]) == 0

    # Mallory's messages all go through, each once, never more than two at a time.
    flood_gate.set()
    assert wait_for(lambda: len([d for d in record["done"] if d[0] == "mallory"]) == 16)
    assert sorted(n for user, _, n in record["done"] if user == "mallory") == list(range(16))
    assert record["most"]["mallory"] == PER_USER


def test_a_socket_with_much_to_do_takes_turns_with_its_users_other_sockets(runner):
    """A socket with many commands yields after BATCH of them to its user's sockets that wait;
    each socket's own commands stay in order."""
    record = runner.record
    start = threading.Event()  # nothing finishes before every socket is queued
    busy = FakeConnection(runner, "bob", "busy")
    quiet = [FakeConnection(runner, "bob", f"q{i}") for i in range(3)]
    for n in range(10):
        busy.push_command(("bob", n, start))
    for conn in quiet:
        conn.push_command(("bob", 100, start))
    # busy and q0 hold bob's two turns; q1 and q2 wait for one.
    assert wait_for(lambda: len(runner._waiting.get("bob", ())) == 2)
    start.set()

    assert wait_for(lambda: len(record["done"]) == 13)
    order = [(conn, n) for _, conn, n in record["done"]]
    assert [n for conn, n in order if conn == "busy"] == list(range(10))
    # After its first two, busy went behind the sockets that were waiting: its third command
    # ran on the thread of a quiet socket that had had its turn.
    assert min(order.index(("q1", 100)), order.index(("q2", 100))) < order.index(("busy", 2))
    assert record["most"]["bob"] <= PER_USER
    # Nothing of bob is left counted: a new command of his runs at once.
    assert wait_for(lambda: not runner._running and not runner._waiting)


def test_a_command_waiting_for_its_users_turn_still_runs_when_the_worker_leaves(monkeypatch):
    """gunicorn's worker_exit lets what is queued finish (a chat message being stored): that
    includes a socket waiting behind its user's other two."""
    done, gate = [], threading.Event()

    def handle(ext, st, conn, command):
        assert gate.wait(10)
        done.append(conn.id)

    monkeypatch.setattr(commands, "_handle", handle)
    runner = CommandRunner(ext=None, state=None, threads=4)
    tabs = [FakeConnection(runner, "carol", f"tab{i}") for i in range(PER_USER + 1)]
    for tab in tabs:
        tab.push_command("chat.send")
    assert wait_for(lambda: len(runner._waiting.get("carol", ())) == 1)

    runner.shutdown()  # the worker is on its way out
    gate.set()
    runner.pool.shutdown(wait=True)
    assert sorted(done) == sorted(tab.id for tab in tabs)
