"""One worker's reactor serves every socket fairly: a flooding socket gets a bounded share per
pass and is closed, an exception in one socket's input closes that socket alone (1011), and the
others keep their round trips. Real sockets (socket pairs) and real wsproto, no server."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time

import pytest
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType

from flask_tidings.connection import FRAMES_PER_PASS, Connection, Identity, Limits
from flask_tidings.reactor import Reactor

TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA

LIMITS = Limits(max_message_bytes=64 * 1024, outbox_bytes=1024 * 1024, send_timeout=10.0,
                heartbeat=25.0, rate=20.0, burst=40, flood_close_after=100,
                max_fragments=32, message_timeout=10.0)


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A masked client frame, as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    header = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    if n < 126:
        header += bytes((0x80 | n,))
    elif n < 65536:
        header += struct.pack("!BH", 0x80 | 126, n)
    else:
        header += struct.pack("!BQ", 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Peer:
    """The client end of one connection: sends frames, reads the server's unmasked frames."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._need(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return first & 0x0F, self._need(n)

    def wait_for(self, opcode: int, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got, payload = self.read_frame()
            if got == opcode:
                return payload
        raise AssertionError(f"no frame with opcode {opcode}")

    def close_code(self, timeout: float = 10.0) -> int | None:
        try:
            payload = self.wait_for(CLOSE, timeout)
        except (ConnectionError, OSError):
            return None
        return struct.unpack("!H", payload[:2])[0]


def answer_commands(conn: Connection) -> None:
    """A stand-in for the command pool: answer every message with a pong, off the reactor."""

    def drain() -> None:
        while (command := conn.pop_command()) is not None:
            ref = json.loads(command).get("ref")
            conn.send_json({"type": "pong", "ref": ref})

    threading.Thread(target=drain, daemon=True).start()


@pytest.fixture(scope="module")
def reactor() -> Reactor:
    return Reactor()


@pytest.fixture
def connect(reactor):
    """``connect(**limit_changes) -> (Connection, Peer)`` handed to the reactor like a handshake."""
    made: list[Peer] = []

    def make(add: bool = True, **changes) -> tuple[Connection, Peer]:
        ours, theirs = socket.socketpair()
        limits = Limits(**{**LIMITS.__dict__, **changes})
        conn = Connection(ours, WsConnection(ConnectionType.SERVER), Identity("7"), limits,
                          reactor)
        conn.schedule = answer_commands
        if add:
            reactor.add(conn)
        peer = Peer(theirs)
        made.append(peer)
        return conn, peer

    yield make
    for peer in made:
        peer.sock.close()


def round_trip(peer: Peer, ref: str) -> dict:
    peer.send(frame(TEXT, json.dumps({"type": "ping", "ref": ref}).encode()))
    while True:
        message = json.loads(peer.wait_for(TEXT))
        if message.get("ref") == ref:
            return message


def flood(peer: Peer, chunk: bytes, seconds: float = 10.0) -> threading.Thread:
    """Send ``chunk`` over and over until the server closes or ``seconds`` pass (bounded)."""

    def run() -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                peer.sock.sendall(chunk)
        except OSError:
            pass  # closed by the server: the point of the test

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_one_pass_handles_a_bounded_number_of_frames_and_reads_no_more_meanwhile(connect):
    conn, peer = connect(add=False, burst=10_000, flood_close_after=10_000)
    conn.sock.setblocking(False)
    peer.send(frame(PING, b"p") * (FRAMES_PER_PASS * 3))
    time.sleep(0.05)
    assert conn.on_readable() is True
    assert conn.input_pending, "frames beyond one share should wait for the next pass"
    assert pongs_waiting(peer) == FRAMES_PER_PASS
    passes = 1
    while conn.input_pending:
        conn.on_readable()
        passes += 1
    assert passes >= 3
    assert pongs_waiting(peer) == FRAMES_PER_PASS * 2


def pongs_waiting(peer: Peer) -> int:
    """How many pong frames the server has written so far (reads until a short silence)."""
    count = 0
    peer.sock.settimeout(0.2)
    try:
        while True:
            assert peer.read_frame() == (PONG, b"p")
            count += 1
    except TimeoutError:
        return count
    finally:
        peer.sock.settimeout(10)


def test_empty_continuation_frames_forever_are_closed_and_a_neighbour_keeps_its_round_trip(
        connect):
    _, flooder = connect()
    _, healthy = connect()
    flooder.send(frame(TEXT, b'{"type":', fin=False))
    sender = flood(flooder, frame(CONTINUATION, fin=False) * 2000)
    assert round_trip(healthy, "during")["type"] == "pong"
    assert flooder.close_code() in (1008, 4029)
    flooder.sock.shutdown(socket.SHUT_RDWR)
    sender.join(timeout=15)
    assert round_trip(healthy, "after")["type"] == "pong"


def test_a_ping_flood_gets_its_burst_of_pongs_then_silence_then_4029(connect):
    _, flooder = connect()
    _, healthy = connect()
    sender = flood(flooder, frame(PING, b"x") * 2000)
    assert round_trip(healthy, "during")["type"] == "pong"
    pongs = 0
    while True:
        opcode, payload = flooder.read_frame()
        if opcode == PONG:
            pongs += 1
        elif opcode == CLOSE:
            assert struct.unpack("!H", payload[:2])[0] == 4029
            break
    flooder.sock.shutdown(socket.SHUT_RDWR)
    sender.join(timeout=15)
    # The burst, plus what the rate refilled while the flood lasted: nowhere near 2,000.
    assert LIMITS.burst <= pongs < LIMITS.burst + 100


def test_an_exception_in_one_sockets_input_closes_that_socket_with_1011_only(connect):
    broken, victim = connect()
    _, healthy = connect()

    def explode(conn: Connection) -> None:
        raise RuntimeError("the command pool refused the work")

    broken.schedule = explode
    # A command for the pool (a ping would be answered by the reactor itself).
    victim.send(frame(TEXT, b'{"type":"unsubscribe","stream":"broadcast"}'))
    assert victim.close_code() == 1011
    assert round_trip(healthy, "still")["type"] == "pong"
