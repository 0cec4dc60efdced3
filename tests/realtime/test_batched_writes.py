"""A handshake's 101 and welcome, and a subscribe's replies, leave in one ``send``
(``Connection.batched``): fewer system calls, and nothing may change order or go missing for it.
In process, over a socket pair, with a stand-in reactor that only records what it is asked."""

from __future__ import annotations

import socket
import threading

from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType

from flask_tidings import frames
from flask_tidings.connection import BATCH_BYTES, Connection, Identity, Limits


class Reactor:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def want_write(self, conn) -> None:
        self.asked.append("write")

    def finish_soon(self, conn) -> None:
        self.asked.append("finish")


class CountingSocket:
    """The server's end: counts its ``send`` calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)


def connection():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    server = CountingSocket(theirs)
    limits = Limits(max_message_bytes=65536, outbox_bytes=1 << 20, send_timeout=10.0,
                    heartbeat=25.0, rate=10.0, burst=20, flood_close_after=3)
    conn = Connection(server, WsConnection(ConnectionType.SERVER), Identity("1"), limits,
                      Reactor())
    return conn, server, ours


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_what_a_batch_holds_leaves_in_one_send_and_in_order_with_other_threads():
    conn, server, client = connection()
    answer = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    with conn.batched():
        conn.write_raw(answer)
        conn.send_json({"type": "welcome"})
        # A live event written from another thread meanwhile waits behind the batch.
        other = threading.Thread(target=conn.send_json, args=({"type": "event"},))
        other.start()
        other.join()
        assert server.sends == 0
    assert server.sends == 1
    expected = (answer + frames.text('{"type":"welcome"}') + frames.text('{"type":"event"}'))
    assert read_exactly(client, len(expected)) == expected
    # After the batch, writes go straight out again.
    conn.send_json({"type": "later"})
    assert server.sends == 2


def test_a_close_written_in_a_batch_still_leaves_with_it():
    conn, server, client = connection()
    with conn.batched():
        conn.write_raw(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        conn.close(4001, "signed out")
    expected = b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + frames.close(4001, "signed out")
    assert server.sends == 1
    assert read_exactly(client, len(expected)) == expected


def test_a_large_batch_goes_to_the_kernel_as_it_fills_not_all_at_the_end():
    conn, server, client = connection()
    row = frames.text("x" * 1000)
    rows = BATCH_BYTES // len(row) + 1
    with conn.batched():
        for _ in range(rows):
            conn.write_raw(row)
        assert server.sends == 1  # sent when it passed BATCH_BYTES, before the batch ended
    assert read_exactly(client, rows * len(row)) == row * rows
