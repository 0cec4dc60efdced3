"""A flooder pays for its own flood: what it sends after we closed it is not parsed, the commands
of all one user's sockets share one budget, and a client keeping to the documented rate is never
refused because the worker is slow. Real sockets (socket pairs) and real wsproto, no server."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType

from flask_tidings import connection
from flask_tidings.admission import Admission, AdmissionLimits
from flask_tidings.connection import FRAMES_AFTER_CLOSE, Connection, Identity, Limits
from flask_tidings.inbound import TokenBucket
from tests.realtime.test_reactor_shares import (  # noqa: F401  (fixtures)
    CLOSE,
    LIMITS,
    PING,
    TEXT,
    Peer,
    answer_commands,
    connect,
    frame,
    reactor,
)


class CountingWs:
    """The connection's wsproto, counting every event it parses (a probe, nothing else)."""

    def __init__(self, ws):
        self._ws = ws
        self.parsed = 0

    def events(self):
        for event in self._ws.events():
            self.parsed += 1
            yield event

    def __getattr__(self, name):
        return getattr(self._ws, name)


def fill(sock: socket.socket) -> int:
    """Write pings to ``sock`` until the kernel takes no more; the bytes it took."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    chunk, taken = frame(PING, b"x") * 4000, 0
    try:
        while True:
            taken += sock.send(chunk)
    except BlockingIOError:
        return taken
    finally:
        sock.settimeout(timeout)


def test_frames_a_flooder_sends_after_our_close_are_not_parsed(connect):
    conn, flooder = connect(add=False, burst=5, flood_close_after=5)
    probe = conn.ws = CountingWs(conn.ws)
    conn.reactor.add(conn)
    # Pings until the kernel takes no more; the server closes it (4029) within the first dozen.
    assert fill(flooder.sock) > 5 * FRAMES_AFTER_CLOSE * len(frame(PING, b"x"))
    assert flooder.close_code() == 4029
    flooder.sock.shutdown(socket.SHUT_WR)  # the flooder goes away without a close frame
    assert conn.finished.wait(10), "the close deadline should end the connection"
    assert probe.parsed <= 5 + 5 + 1 + FRAMES_AFTER_CLOSE


def test_a_flooder_still_sending_after_our_close_is_not_read_at_all(connect, monkeypatch):
    # Read and dropped, its bytes still cost a recv per chunk here, and nginx relays every one
    # of them; unread, TCP flow control stops the flooder until the close deadline ends it.
    monkeypatch.setattr(connection, "CLOSE_WAIT", 60.0)
    conn, flooder = connect(burst=5, flood_close_after=5)
    fill(flooder.sock)
    assert flooder.close_code() == 4029
    deadline = time.monotonic() + 10
    while not conn.deaf and time.monotonic() < deadline:
        fill(flooder.sock)  # whatever the reactor still reads, until it stops reading
        time.sleep(0.05)
    assert conn.deaf, "the server should stop reading a client that ignores its close"
    fill(flooder.sock)
    time.sleep(0.3)  # a reactor still draining the socket would make room in that time
    assert fill(flooder.sock) == 0, "the server read what the flooder sent after it went deaf"
    assert not conn.finished.is_set()  # still waiting for the deadline, reading nothing


def test_a_client_answering_our_close_is_still_heard(connect):
    conn, peer = connect(burst=1, flood_close_after=0, rate=0.0)
    peer.send(frame(PING, b"a") + frame(PING, b"b"))  # the second is over the rate: 4029
    assert peer.close_code() == 4029
    peer.send(frame(CLOSE, struct.pack("!H", 4029)))
    assert conn.finished.wait(10)
    assert conn.close_code == 4029


def open_sockets(reactor, count: int, budget=None, schedule=answer_commands, **changes):
    """``count`` connections of one user (sharing ``budget``), handed to the reactor."""
    pairs = []
    limits = Limits(**{**LIMITS.__dict__, **changes})
    for _ in range(count):
        ours, theirs = socket.socketpair()
        conn = Connection(ours, WsConnection(ConnectionType.SERVER), Identity("7"), limits,
                          reactor, budget)
        conn.schedule = schedule
        reactor.add(conn)
        pairs.append((conn, Peer(theirs)))
    return pairs


def replies(peer: Peer, count: int) -> list[str]:
    """The next ``count`` answers to commands: "pong" or the error's code."""
    out = []
    while len(out) < count:
        message = json.loads(peer.wait_for(TEXT))
        out.append(message.get("code") or message["type"])
    return out


def test_twenty_sockets_of_one_user_cannot_exceed_the_users_command_budget(reactor):
    budget = TokenBucket(rate=0.0, burst=30, now=time.monotonic())
    pairs = open_sockets(reactor, 20, budget)
    for _, peer in pairs:  # 10 each: well within every socket's own burst of 40
        peer.send(b"".join(frame(TEXT, b'{"type":"ping"}') for _ in range(10)))
    answers = [answer for _, peer in pairs for answer in replies(peer, 10)]
    assert answers.count("pong") == 30
    assert answers.count("rate_limited") == 200 - 30
    assert sum(conn.meter.refused_shared for conn, _ in pairs) == 170
    for _, peer in pairs:
        peer.sock.close()


def test_another_users_commands_are_not_refused_when_one_user_has_spent_theirs(reactor):
    spent = TokenBucket(rate=0.0, burst=0, now=time.monotonic())
    [(_, flooder)] = open_sockets(reactor, 1, spent)
    [(_, other)] = open_sockets(reactor, 1, TokenBucket(rate=0.0, burst=5, now=time.monotonic()))
    flooder.send(frame(TEXT, b'{"type":"ping"}'))
    other.send(frame(TEXT, b'{"type":"ping"}'))
    assert replies(flooder, 1) == ["rate_limited"]
    assert replies(other, 1) == ["pong"]


def test_commands_sent_at_the_documented_rate_to_a_stalled_pool_are_not_refused(reactor):
    pool_running = threading.Event()

    def stalled_pool(conn: Connection) -> None:
        def run() -> None:
            pool_running.wait(30)
            answer_commands(conn)

        threading.Thread(target=run, daemon=True).start()

    rate, burst = 40.0, 20
    [(conn, peer)] = open_sockets(reactor, 1, schedule=stalled_pool, rate=rate, burst=burst)
    # A command for the pool (a "ping" would be answered by the reactor itself); the stand-in
    # pool answers each with a pong.
    command = frame(TEXT, b'{"type":"unsubscribe","stream":"none"}')
    peer.send(command * burst)  # the whole burst at once ...
    for _ in range(40):  # ... then a second of messages at the rate
        time.sleep(1.0 / rate)
        peer.send(command)
    deadline = time.monotonic() + 10
    while not conn.held and time.monotonic() < deadline:
        time.sleep(0.01)
    assert conn.held, "a socket whose commands wait for the pool should not be read"
    assert len(conn._commands) == burst, "no more than a burst of commands waits in memory"
    pool_running.set()
    assert replies(peer, burst + 40) == ["pong"] * (burst + 40)
    assert conn.meter.refused == 0
    peer.sock.close()


def test_a_users_sockets_in_a_worker_share_one_budget_and_each_user_has_their_own():
    admission = Admission(AdmissionLimits(
        capacity=100, per_user=20, per_address=0, handshakes_per_minute=60,
        handshakes_per_minute_per_address=0, retry_after=5, user_rate=40.0, user_burst=200))
    first, second = admission.reserve("alice", None, 0.0), admission.reserve("alice", None, 0.0)
    other = admission.reserve("bob", None, 0.0)
    assert first.budget is second.budget is not None
    assert other.budget is not first.budget
    first.release()
    third = admission.reserve("alice", None, 1.0)
    assert third.budget is second.budget
    # Forgotten with the user's last socket: memory follows the sockets, not every user seen.
    second.release()
    third.release()
    assert list(admission._budgets) == ["bob"]


def test_no_shared_budget_when_the_user_rate_is_zero():
    admission = Admission(AdmissionLimits(
        capacity=100, per_user=20, per_address=0, handshakes_per_minute=60,
        handshakes_per_minute_per_address=0, retry_after=5, user_rate=0.0, user_burst=0))
    assert admission.reserve("alice", None, 0.0).budget is None
