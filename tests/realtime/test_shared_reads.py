"""After a restart every client resumes, most from the same cursor: the log is read once for all
of them (flask_tidings/replays.py), and nobody gets less than the log holds."""

from __future__ import annotations

import pytest

from flask_tidings.replays import SharedReads
from tests.realtime.local import LocalClient, make_app

BOUND = 15.0


def events_of(client: LocalClient, count: int) -> list[int]:
    ids = []
    while len(ids) < count:
        message = client.recv(timeout=BOUND)
        assert message.get("type") not in ("reset", "error"), message
        if "id" in message:
            ids.append(message["id"])
    return ids


def counting_reads(state) -> list[tuple[str, int]]:
    """Every read of the log from here on, as (stream, cursor)."""
    reads: list[tuple[str, int]] = []
    read_since = state.store.read_since

    def counted(stream, after, limit):
        reads.append((stream, after))
        return read_since(stream, after, limit)

    state.store.read_since = counted
    return reads


@pytest.fixture
def site(tmp_path):
    """A realtime site in this process, and a way to open reader sockets to it (closed after)."""
    _, realtime, state = make_app(tmp_path)
    clients: list[LocalClient] = []

    def reader() -> LocalClient:
        clients.append(LocalClient(state, "reader"))
        return clients[-1]

    yield realtime, state, reader
    for client in clients:
        client.close()
    state.stop()


def test_a_crowd_resuming_from_the_same_cursor_reads_the_log_once(site):
    realtime, state, reader = site
    for n in range(20):
        realtime.publish("broadcast", "note", {"n": n})
    reads = counting_reads(state)
    for _ in range(10):
        # One after the other, as a restart's spread brings them back.
        client = reader()
        client.send({"type": "subscribe", "stream": "broadcast", "after": 5, "ref": "r"})
        assert events_of(client, 15) == list(range(6, 21))
    assert reads.count(("broadcast", 5)) == 1
    assert state.shared_reads.hits >= 9


def test_who_resumes_after_a_newer_event_gets_it_too_not_only_the_shared_read(site):
    realtime, _, reader = site
    for n in range(10):
        realtime.publish("broadcast", "note", {"n": n})
    first = reader()
    first.send({"type": "subscribe", "stream": "broadcast", "after": 5, "ref": "1"})
    assert events_of(first, 5) == [6, 7, 8, 9, 10]
    # An event after that read: a client resuming from the same cursor learns the new head
    # when it subscribes; the earlier read stops at 10, and 11 must come all the same.
    assert realtime.publish("broadcast", "note", {"n": "new"}).seq == 11
    assert events_of(first, 1) == [11]
    second = reader()
    second.send({"type": "subscribe", "stream": "broadcast", "after": 5, "ref": "2"})
    assert events_of(second, 6) == [6, 7, 8, 9, 10, 11]


def rows(first: int, last: int) -> list[tuple[int, bytes]]:
    return [(seq, b"frame %d" % seq) for seq in range(first, last + 1)]


def test_a_read_answers_only_while_fresh_and_only_up_to_what_it_holds():
    reads = SharedReads(fresh=1.0)
    reads.put("broadcast", 5, rows(6, 10), now=100.0)
    assert reads.get("broadcast", 5, page=500, known=10, now=100.5) == rows(6, 10)
    assert reads.get("broadcast", 5, page=500, known=9, now=100.5) == rows(6, 10)
    # The reader knows of event 11: this read is from before it.
    assert reads.get("broadcast", 5, page=500, known=11, now=100.5) is None
    # ... unless it filled the reader's page: the reader then reads on from 10.
    assert reads.get("broadcast", 5, page=5, known=11, now=100.5) == rows(6, 10)
    assert reads.get("broadcast", 5, page=3, known=11, now=100.5) == rows(6, 8)
    # Another cursor, another stream, or a second later: not this read.
    assert reads.get("broadcast", 6, page=500, known=10, now=100.5) is None
    assert reads.get("role:user", 5, page=500, known=10, now=100.5) is None
    assert reads.get("broadcast", 5, page=500, known=10, now=101.0) is None


def test_an_empty_read_says_only_that_nothing_came_after_the_cursor_then():
    reads = SharedReads()
    reads.put("user:7", 3, [], now=10.0)
    assert reads.get("user:7", 3, page=500, known=3, now=10.1) == []
    assert reads.get("user:7", 3, page=500, known=4, now=10.1) is None


def test_memory_is_bounded_by_bytes_and_by_count_and_old_reads_go_first():
    reads = SharedReads(fresh=60.0, max_bytes=4000, max_reads=3)
    for cursor in range(5):
        reads.put("broadcast", cursor, rows(cursor + 1, cursor + 10), now=float(cursor))
    assert len(reads) == 3
    assert reads.get("broadcast", 0, page=500, known=10, now=5.0) is None
    assert reads.get("broadcast", 4, page=500, known=14, now=5.0) == rows(5, 14)
    # One read larger than a quarter of the budget is not kept at all.
    big = [(1, b"x" * 1500)]
    reads.put("huge", 0, big, now=6.0)
    assert reads.get("huge", 0, page=500, known=1, now=6.0) is None
    for cursor in range(40):
        reads.put("s", cursor, [(cursor + 1, b"y" * 900)], now=7.0)
    assert reads._bytes <= 4000
