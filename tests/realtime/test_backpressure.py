"""Latency under bursts (issue 18): publishers wait briefly instead of an invisible queue growing.

Scenario B (one broadcast per request, back to back, to 1,000 sockets) answered publishers faster
than the fan-out wrote their events, so the dispatcher's queue grew through the burst and every
event waited behind all those before it (p50 478 ms). Now a publisher of the worker is held while
the oldest queued event has waited longer than ``REALTIME_DISPATCH_LAG`` (at most
``REALTIME_DISPATCH_WAIT``): the burst goes at the fan-out's speed. Timing figures live in the
bench; these tests check the rules with a queue no dispatcher drains unless the test says so.
"""

from __future__ import annotations

import threading
import time

import pytest

from app.extensions import db, realtime
from flask_tidings.brokers import DispatchQueue
from tests.realtime.test_transactional import alice

LONG_AGO = 1.0  # seconds: "an event queued this long ago" is far behind any lag bound


def eventually(condition, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def held_publisher(queue: DispatchQueue, max_lag: float = 0.01, timeout: float = 30.0):
    """Start a publisher that asks for room; returns its thread and what it waited."""
    waited: list[float] = []
    thread = threading.Thread(target=lambda: waited.append(queue.wait_for_room(max_lag, timeout)))
    thread.start()
    return thread, waited


def test_a_publisher_goes_straight_through_while_the_fan_out_keeps_up():
    queue = DispatchQueue()
    assert queue.wait_for_room(0.01, 30.0) == 0.0  # empty
    queue.put({"n": 1})  # just queued: not behind
    assert queue.wait_for_room(10.0, 30.0) == 0.0
    assert queue.waits == 0


def test_a_publisher_waits_while_the_fan_out_is_behind_and_goes_when_it_takes_the_batch():
    queue = DispatchQueue()
    queue.put({"n": 1}, now=time.monotonic() - LONG_AGO)
    queue.put({"n": 2}, now=time.monotonic() - LONG_AGO)
    thread, waited = held_publisher(queue)
    eventually(lambda: queue._held == 1)  # it is waiting, not publishing
    assert not waited
    batch = queue.take()  # the dispatcher takes everything queued, in order ...
    assert batch == [{"n": 1}, {"n": 2}]
    assert queue.lag >= LONG_AGO  # ... and records how long the oldest waited
    thread.join(10.0)
    assert not thread.is_alive() and waited[0] > 0  # ... and the publisher goes on
    assert queue.waits == 1


def test_a_stuck_fan_out_holds_a_publisher_no_longer_than_the_wait_bound():
    """Being behind never fails a publish: past the bound the event is stored anyway."""
    queue = DispatchQueue()
    queue.put({"n": 1}, now=time.monotonic() - LONG_AGO)
    thread, waited = held_publisher(queue, timeout=0.05)
    thread.join(10.0)
    assert not thread.is_alive() and waited[0] >= 0.05
    assert len(queue) == 1  # nothing was taken: the publisher went ahead on the bound


def test_the_dispatcher_never_waits_for_itself():
    """A listener that publishes runs on the dispatcher's thread: holding it would deadlock."""
    queue = DispatchQueue()
    queue.put({"n": 1})
    waited: list[float] = []

    def dispatcher() -> None:
        queue.take()
        queue.put({"n": 2}, now=time.monotonic() - LONG_AGO)  # now far behind ...
        waited.append(queue.wait_for_room(0.01, 30.0))  # ... yet its own publish passes

    thread = threading.Thread(target=dispatcher)
    thread.start()
    thread.join(10.0)
    assert waited == [0.0]


def test_a_batch_takes_at_most_its_size_and_a_stop_comes_through():
    queue = DispatchQueue()
    for n in range(5):
        queue.put({"n": n})
    queue.put(None)
    assert [m["n"] for m in queue.take(most=3)] == [0, 1, 2]
    assert queue.take() == [{"n": 3}, {"n": 4}, None]


NOBODY = {"k": "event", "stream": "followed-by-nobody", "seq": None, "payload": "{}"}


@pytest.fixture
def behind(app, monkeypatch):
    """This worker's fan-out stuck in a batch, with an event queued long ago behind it: every
    publisher is behind until the test lets the fan-out go (``behind.release.set()``)."""
    state = app.extensions["realtime"]
    state.config["DISPATCH_WAIT"] = 30.0
    with app.test_request_context():
        broker = state.ensure_publishing()
    busy, release = threading.Event(), threading.Event()
    dispatch = state.hub.dispatch

    def stuck(events):
        busy.set()
        release.wait(30.0)
        return dispatch(events)

    monkeypatch.setattr(state.hub, "dispatch", stuck)
    queue = broker._queue
    queue.put(dict(NOBODY))
    eventually(busy.is_set)  # the dispatcher took it and is stuck in its fan-out
    queue.put(dict(NOBODY), now=time.monotonic() - LONG_AGO)
    queue.release = release
    yield queue
    release.set()


def publish_in_thread(app, fn):
    done = threading.Event()

    def run() -> None:
        with app.app_context():
            fn()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_a_burst_publisher_is_held_before_its_event_is_stored_until_the_fan_out_catches_up(
    app, behind
):
    done = publish_in_thread(app, lambda: realtime.publish("broadcast", "bench", {"i": 1}))
    eventually(lambda: behind._held == 1)
    with app.app_context():
        assert realtime.head("broadcast") == 0  # held before storing: the wait is not the event's
    behind.release.set()  # the fan-out finishes its batch and takes the next
    assert done.wait(10.0)
    with app.app_context():
        assert realtime.head("broadcast") == 1
    assert behind.waits == 1


def test_a_publisher_with_a_session_is_held_after_its_commit_never_inside_it(app, behind):
    def post() -> None:
        realtime.notify(alice(app), "notification", {"n": 1}, session=db.session)
        db.session.commit()

    done = publish_in_thread(app, post)
    eventually(lambda: behind._held == 1)
    with app.app_context():
        # Committed already (the lock is free for every other writer): only the push waits.
        assert realtime.head(f"user:{alice(app).id}") == 1
    behind.release.set()
    assert done.wait(10.0)
    assert behind.waits == 1
