"""RFC 6455 corners with hand-made frames: fragments are reassembled, control frames may sit
between them, and every protocol violation ends with the close code the RFC names.

(Binary → 1003, invalid UTF-8 in one frame → 1007 and an unmasked text frame → 1002 are in
tests/realtime/test_abuse.py; these are the other cases.)
"""

from __future__ import annotations

import json
import struct

import pytest

from tests.support.sockets import RawClient

TEXT, CONTINUATION, BINARY, CLOSE, PING, PONG = 0x1, 0x0, 0x2, 0x8, 0x9, 0xA


@pytest.fixture
def raw(server, alice):
    client = RawClient(server, alice)
    assert json.loads(next_text(client))["type"] == "welcome"
    yield client
    client.close()


def next_text(raw: RawClient) -> str:
    """The next text message, server pings and heartbeats skipped."""
    while True:
        opcode, payload = raw.read_frame()
        if opcode == TEXT and json.loads(payload)["type"] != "hb":
            return payload.decode()
        assert opcode in (TEXT, PING), f"unexpected opcode {opcode}: {payload!r}"


def next_frame(raw: RawClient, opcode: int) -> bytes:
    """The payload of the next frame with this opcode, heartbeats skipped."""
    while True:
        got, payload = raw.read_frame()
        if got == opcode:
            return payload
        assert got in (TEXT, PING), f"unexpected opcode {got}: {payload!r}"


def subscribe_in_three(text: str) -> list[bytes]:
    data = text.encode()
    third = len(data) // 3
    return [data[:third], data[third:2 * third], data[2 * third:]]


SUBSCRIBE = json.dumps({"type": "subscribe", "stream": "broadcast", "ref": "frag"})


def test_a_message_in_three_fragments_is_reassembled_and_answered(raw):
    first, middle, last = subscribe_in_three(SUBSCRIBE)
    raw.send_frame(TEXT, first, fin=False)
    raw.send_frame(CONTINUATION, middle, fin=False)
    raw.send_frame(CONTINUATION, last, fin=True)
    reply = json.loads(next_text(raw))
    assert (reply["type"], reply["stream"], reply["ref"]) == ("subscribed", "broadcast", "frag")


def test_a_ping_between_fragments_is_answered_at_once_and_the_message_still_arrives(raw):
    first, middle, last = subscribe_in_three(SUBSCRIBE)
    raw.send_frame(TEXT, first, fin=False)
    raw.send_frame(PING, b"between fragments")
    assert next_frame(raw, PONG) == b"between fragments"
    raw.send_frame(CONTINUATION, middle, fin=False)
    raw.send_frame(CONTINUATION, last, fin=True)
    assert json.loads(next_text(raw))["ref"] == "frag"


def test_a_multibyte_character_split_across_fragments_is_fine(raw):
    data = json.dumps({"type": "ping", "ref": "é—😀"}, ensure_ascii=False).encode()
    cut = data.index("😀".encode()) + 2  # inside the 4-byte sequence
    raw.send_frame(TEXT, data[:cut], fin=False)
    raw.send_frame(CONTINUATION, data[cut:], fin=True)
    assert json.loads(next_text(raw)) == {"type": "pong", "ref": "é—😀"}


def test_invalid_utf8_in_a_continuation_fragment_closes_with_1007(raw):
    raw.send_frame(TEXT, b'{"type": "ping", "ref": "', fin=False)
    raw.send_frame(CONTINUATION, b'\xc3\x28"}', fin=True)
    assert raw.close_code() == 1007


def test_a_client_close_code_is_echoed(raw):
    raw.send_frame(CLOSE, struct.pack("!H", 4000) + b"see you")
    payload = next_frame(raw, CLOSE)
    assert struct.unpack("!H", payload[:2])[0] == 4000


def test_an_empty_close_frame_is_answered_with_1000(raw):
    raw.send_frame(CLOSE, b"")
    payload = next_frame(raw, CLOSE)
    assert struct.unpack("!H", payload[:2])[0] == 1000


def test_a_close_reason_that_is_not_utf8_closes_with_1007(raw):
    raw.send_frame(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")
    assert raw.close_code() == 1007


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF], ids=lambda o: f"opcode-{o:#x}")
def test_reserved_opcodes_close_with_1002(raw, opcode):
    raw.send_frame(opcode, b"reserved")
    assert raw.close_code() == 1002


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
def test_rsv_bits_without_a_negotiated_extension_close_with_1002(raw, rsv):
    raw.send_frame(TEXT, b'{"type": "ping"}', rsv=rsv)
    assert raw.close_code() == 1002


def _violations() -> dict[str, list[tuple[int, bytes, dict]]]:
    """Frame sequences the RFC forbids, each as (opcode, payload, send_frame kwargs)."""
    return {
        "continuation-without-a-start": [(CONTINUATION, b'{"type":"ping"}', {})],
        "new-text-inside-a-fragmented-message": [(TEXT, b'{"type":', {"fin": False}),
                                                 (TEXT, b'"ping"}', {})],
        "fragmented-ping": [(PING, b"half", {"fin": False})],
        "ping-over-125-bytes": [(PING, b"x" * 126, {})],
        "unmasked-ping": [(PING, b"bare", {"masked": False})],
        "close-with-one-byte-payload": [(CLOSE, b"\x03", {})],
        "close-with-code-1005": [(CLOSE, struct.pack("!H", 1005), {})],
        "close-with-code-999": [(CLOSE, struct.pack("!H", 999), {})],
    }


@pytest.mark.parametrize("frames", list(_violations().values()), ids=list(_violations()))
def test_protocol_violations_close_with_1002(raw, frames):
    for opcode, payload, kwargs in frames:
        raw.send_frame(opcode, payload, **kwargs)
    assert raw.close_code() == 1002
