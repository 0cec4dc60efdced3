"""Group commit: concurrent publishers outside a transaction share one (SQLite).

Most of an append's CPU is its transaction, and concurrent publishers wait for the one publish
lock anyway; so those that queue while another holds it are appended together by the next
holder, in arrival order, with one commit, and each gets its own event back. Errors stay with the
publisher that caused them, and a publisher that gives up waiting has stored nothing.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine

from flask_tidings.store import EventStore, PublishTimeout


@pytest.fixture
def store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log = EventStore(lambda: engine)
    log.create_tables()
    yield log
    engine.dispose()


def eventually(condition, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def queued_publishers(store: EventStore, calls: list[dict]) -> list[dict]:
    """Hold the publish lock, queue one publisher per call in this order, then let go."""
    results: list[dict] = [{} for _ in calls]

    def publish(i: int, call: dict) -> None:
        try:
            results[i]["event"] = store.publish(**call)
        except Exception as exc:
            results[i]["error"] = exc

    threads = []
    with store.writing(10.0):
        for i, call in enumerate(calls):
            thread = threading.Thread(target=publish, args=(i, call))
            thread.start()
            threads.append(thread)
            eventually(lambda n=i + 1: len(store._group) == n)
    for thread in threads:
        thread.join(10.0)
    return results


def test_publishers_waiting_for_the_lock_are_stored_in_one_commit_in_arrival_order(store):
    pushed: list[int] = []
    calls = [dict(stream="broadcast", type_="bench", data={"n": n},
                  push=lambda e: pushed.append(e.seq)) for n in range(5)]
    results = queued_publishers(store, calls)
    assert [r["event"].data for r in results] == [{"n": n} for n in range(5)]  # each its own
    assert [r["event"].seq for r in results] == [1, 2, 3, 4, 5]
    assert pushed == [1, 2, 3, 4, 5]  # pushed after the commit, in sequence order
    assert (store.group_commits, store.group_events) == (1, 5)
    assert [seq for seq, _ in store.read_since("broadcast", 0, 10)] == [1, 2, 3, 4, 5]


def test_one_publishers_bad_event_fails_only_that_publisher(store):
    calls = [dict(stream="broadcast", type_="bench", data={"n": 0}),
             dict(stream="broadcast", type_="bench", data={"not json": object()}),
             dict(stream="user:7", type_="bench", data={"n": 2})]
    results = queued_publishers(store, calls)
    assert isinstance(results[1]["error"], TypeError)
    assert results[0]["event"].seq == 1 and results[2]["event"].seq == 1
    assert store.head("broadcast") == 1  # the failed one took no number


def test_the_same_key_twice_in_one_group_stores_one_event(store):
    pushed: list[int] = []
    calls = [dict(stream="broadcast", type_="bench", data={"n": n}, key="double",
                  push=lambda e: pushed.append(e.seq)) for n in range(2)]
    first, second = (r["event"] for r in queued_publishers(store, calls))
    assert not first.replayed and second.replayed and second.seq == first.seq
    assert pushed == [first.seq]


def test_a_publisher_that_gives_up_waiting_has_stored_nothing(store):
    with store.writing(10.0):
        with pytest.raises(PublishTimeout):
            store.publish("broadcast", "bench", {"n": 1}, timeout=0.05)
    assert store._group == []
    store.publish("broadcast", "bench", {"n": 2})
    assert [seq for seq, _ in store.read_since("broadcast", 0, 10)] == [1]
