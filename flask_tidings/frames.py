"""Server-to-client WebSocket frames, encoded by hand.

Server frames are never masked, so a broadcast's frame is the same bytes for every recipient: we
encode it once per event instead of once per socket, which is most of the cost of a naive fan-out.
We do not negotiate permessage-deflate (the handshake strips the offer), so no frame is compressed.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_FIN_CLOSE = 0x88
_FIN_PING = 0x89
_FIN_PONG = 0x8A


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def text(payload: str | bytes) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return _frame(_FIN_TEXT, payload)


def close(code: int, reason: str = "") -> bytes:
    # Control frames carry at most 125 bytes: 2 for the code, the rest for the reason.
    return _frame(_FIN_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def restart_reason(delay: float) -> str:
    """The reason of a 1001 close when a worker stops: when to come back (docs/protocol.md)."""
    return f"restart; retry in {max(0.0, delay):.1f}s"


def ping(payload: bytes = b"") -> bytes:
    return _frame(_FIN_PING, payload[:125])


def pong(payload: bytes = b"") -> bytes:
    return _frame(_FIN_PONG, payload[:125])
