"""Every inbound frame costs, on the real server: floods of empty continuation frames or pings
are rate-limited and closed while a neighbour's round trip completes; an unfinished message is
bounded in bytes (UTF-8 bytes, not characters), in frames and in time."""

from __future__ import annotations

import json
import struct
import threading
import time

import pytest

from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, RawClient

TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA

#: A short timeout for unfinished messages so its test takes a second, not the default ten.
MESSAGE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(tmp_path_factory.mktemp("inbound"), workers=1,
                             env={"REALTIME_MESSAGE_TIMEOUT": str(MESSAGE_TIMEOUT)})
    yield live
    live.stop()


@pytest.fixture(scope="module")
def alice(server):
    return live_login(server, "alice", "alice-demo-pass")


@pytest.fixture
def raw(server, alice):
    client = RawClient(server, alice)
    yield client
    client.close()


def masked(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One client frame with an all-zero mask (legal, and the payload needs no xor)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


def flood(raw: RawClient, chunk: bytes, seconds: float = 20.0) -> threading.Thread:
    """Send ``chunk`` over and over until the server ends the connection (or, bounded, time)."""

    def run() -> None:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                raw.sock.sendall(chunk)
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def close_code_and_pongs(raw: RawClient, timeout: float = 20.0) -> tuple[int | None, int]:
    """Read until the server's close frame: its code (None if the server only hung up), and
    how many pongs came before it."""
    pongs = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            opcode, payload = raw.read_frame(max(0.1, deadline - time.monotonic()))
        except (ConnectionError, OSError):
            return None, pongs
        if opcode == PONG:
            pongs += 1
        elif opcode == CLOSE:
            return struct.unpack("!H", payload[:2])[0], pongs
    raise AssertionError("the flooding socket was never closed")


def round_trips(client: Client, count: int) -> int:
    """Complete ``count`` JSON ping/pong round trips; returns how many did."""
    done = 0
    for n in range(count):
        client.send({"type": "ping", "ref": n})
        assert client.expect("pong", timeout=20)["ref"] == n
        done += 1
    return done


@pytest.mark.parametrize("name, opening, chunk", [
    ("empty continuations", masked(TEXT, b'{"type":', fin=False),
     masked(CONTINUATION, fin=False) * 4096),
    ("pings", b"", masked(PING, b"are you there") * 2048),
    ("pongs", b"", masked(PONG) * 4096),
], ids=["empty-continuations", "pings", "pongs"])
def test_a_flooding_socket_is_closed_while_a_neighbour_keeps_its_round_trip(
        server, alice, raw, name, opening, chunk):
    healthy = Client(server, live_login(server, "bob", "bob-demo-pass"))
    try:
        raw.sock.sendall(opening)
        sender = flood(raw, chunk)
        assert round_trips(healthy, 20) == 20
        code, pongs = close_code_and_pongs(raw)
        assert code in (1008, 4029), f"{name}: closed with {code}"
        # A ping gets a pong only within the rate: the burst, not thousands.
        assert pongs < 200
        raw.sock.close()
        sender.join(timeout=30)
        assert round_trips(healthy, 3) == 3
    finally:
        healthy.close()


def test_240_kb_of_emoji_are_refused_at_64_kib(raw, alice):
    welcome = json.loads(raw.read_frame()[1])
    limit = welcome["max_message_bytes"]
    emoji = "😀" * 60_000  # 60,000 characters: under the limit counted in characters
    message = json.dumps({"type": "ping", "ref": emoji}, ensure_ascii=False).encode()
    assert len(message) > 3 * limit
    raw.sock.sendall(masked(TEXT, message))
    code, _ = close_code_and_pongs(raw)
    assert code == 1009


def test_a_message_in_too_many_frames_is_closed_with_1008(raw):
    raw.sock.sendall(masked(TEXT, b'{"type": "ping", "pad": "', fin=False))
    raw.sock.sendall(masked(CONTINUATION, b"x", fin=False) * 100)
    code, _ = close_code_and_pongs(raw)
    assert code == 1008


def test_a_message_left_unfinished_is_closed_with_1008(raw):
    raw.sock.sendall(masked(TEXT, b'{"type": "ping", "pad": "', fin=False))
    started = time.monotonic()
    code, _ = close_code_and_pongs(raw, timeout=MESSAGE_TIMEOUT + 20)
    assert code == 1008
    assert time.monotonic() - started >= MESSAGE_TIMEOUT


def test_a_fragmented_message_within_the_bounds_is_answered(raw):
    welcome = json.loads(raw.read_frame()[1])
    assert welcome["type"] == "welcome"
    data = json.dumps({"type": "ping", "ref": "fine"}).encode()
    parts = [data[i:i + 4] for i in range(0, len(data), 4)]
    assert len(parts) <= 32
    for i, part in enumerate(parts):
        raw.sock.sendall(masked(TEXT if i == 0 else CONTINUATION, part,
                                fin=i == len(parts) - 1))
    while True:
        opcode, payload = raw.read_frame()
        if opcode == TEXT and json.loads(payload).get("type") == "pong":
            assert json.loads(payload)["ref"] == "fine"
            return
