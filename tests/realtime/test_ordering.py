"""Two publishers of one stream may announce 11 before 10: the hub puts them back in order for a
moment instead of sending every follower to the log (flask_tidings/ordering.py), and never holds
an event for longer than that."""

from __future__ import annotations

import time

from flask_tidings.hub import Hub
from flask_tidings.ordering import StreamOrder

BOUND = 10.0


def ev(*seqs: int | None) -> list[tuple[int | None, bytes]]:
    return [(seq, f"frame {seq}".encode()) for seq in seqs]


def test_an_event_ahead_of_the_next_waits_for_it_and_both_go_in_order():
    order = StreamOrder(wait=0.02)
    assert order.arrive("broadcast", ev(10), now=0.0) == ev(10)
    assert order.arrive("broadcast", ev(12), now=0.001) == []
    assert order.arrive("broadcast", ev(11), now=0.002) == ev(11, 12)
    assert order.next_due() is None
    # In one arrival too.
    assert order.arrive("broadcast", ev(14, 13, 15), now=0.003) == ev(13, 14, 15)
    assert order.gave_up == 0


def test_an_event_that_never_comes_is_not_waited_for_past_the_deadline():
    order = StreamOrder(wait=0.02)
    order.arrive("broadcast", ev(1), now=0.0)
    assert order.arrive("broadcast", ev(3), now=1.0) == []
    assert order.arrive("broadcast", ev(4), now=1.01) == []
    assert order.due(now=1.015) == {}
    assert order.next_due() == 1.02
    assert order.due(now=1.02) == {"broadcast": ev(3, 4)}
    assert order.gave_up == 2
    # 2 was lost (the followers read it from the log); what follows 4 flows again ...
    assert order.arrive("broadcast", ev(5), now=1.03) == ev(5)
    # ... and 2, if it comes after all, is passed on: each follower knows what it has written.
    assert order.arrive("broadcast", ev(2), now=1.04) == ev(2)


def test_ephemeral_events_and_a_streams_first_event_never_wait():
    order = StreamOrder(wait=0.02)
    assert order.arrive("room:1", ev(None, 7, None), now=0.0) == ev(None, 7, None)
    assert order.arrive("room:2", ev(41), now=0.0) == ev(41)


def test_streams_wait_independently_and_forgetting_lets_everything_go():
    order = StreamOrder(wait=0.02)
    order.arrive("a", ev(1), now=0.0)
    order.arrive("b", ev(1), now=0.0)
    assert order.arrive("a", ev(3), now=0.0) == []
    assert order.arrive("b", ev(2), now=0.0) == ev(2)
    assert order.forget() == {"a": ev(3)}
    assert order.arrive("a", ev(5), now=0.1) == ev(5)  # starts again from what comes


def test_only_so_many_streams_are_remembered():
    order = StreamOrder(wait=0.02, tracked=3)
    for n in range(5):
        order.arrive(f"user:{n}", ev(1), now=0.0)
    # user:0 was forgotten: its next event goes at once (a follower with a gap reads the log).
    assert order.arrive("user:0", ev(5), now=0.0) == ev(5)
    assert order.arrive("user:4", ev(5), now=0.0) == []


class Follower:
    """What a connection is told, in order (a stand-in for Connection.offer_many)."""

    def __init__(self, user: str):
        from flask_tidings.connection import Identity

        self.identity = Identity(user)
        self.id = f"follower-{user}"
        self.streams: dict = {}
        self.got: list[int | None] = []

    def offer_many(self, stream, items):
        self.got.extend(seq for seq, _ in items)
        return len(items)


def test_the_hub_hands_followers_events_in_order_and_lets_held_ones_go_by_itself():
    hub = Hub(order_wait=0.05)
    follower = Follower("1")
    hub.add(follower)  # type: ignore[arg-type]
    hub.subscribe(follower, "broadcast")  # type: ignore[arg-type]
    try:
        hub.dispatch([("broadcast", 1, "{}")])
        hub.dispatch([("broadcast", 3, "{}"), ("broadcast", 4, "{}")])
        assert follower.got == [1]
        hub.dispatch([("broadcast", 2, "{}")])
        assert follower.got == [1, 2, 3, 4]
        # 6 comes, 5 never does: with no other event to carry it, 6 still goes, soon.
        hub.dispatch([("broadcast", 6, "{}")])
        deadline = time.monotonic() + BOUND
        while follower.got[-1] != 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.got == [1, 2, 3, 4, 6]
    finally:
        hub.close()


class Broken(Follower):
    def offer_many(self, stream, items):
        raise RuntimeError("cannot schedule new futures after shutdown")


def test_one_failing_follower_costs_the_others_nothing_and_the_flusher_goes_on():
    hub = Hub(order_wait=0.02)
    broken, follower = Broken("1"), Follower("2")
    for conn in (broken, follower):
        hub.add(conn)  # type: ignore[arg-type]
        hub.subscribe(conn, "broadcast")  # type: ignore[arg-type]
    try:
        hub.dispatch([("broadcast", 1, "{}")])
        for first, then in ((3, [1, 3]), (5, [1, 3, 5])):  # 2 and 4 never come
            hub.dispatch([("broadcast", first, "{}")])
            deadline = time.monotonic() + BOUND
            while follower.got != then and time.monotonic() < deadline:
                time.sleep(0.01)
            assert follower.got == then  # let go by the flusher, twice: it survived the error
    finally:
        hub.close()


def test_a_closed_hub_holds_nothing_back():
    hub = Hub(order_wait=60.0)
    follower = Follower("1")
    hub.add(follower)  # type: ignore[arg-type]
    hub.subscribe(follower, "broadcast")  # type: ignore[arg-type]
    hub.dispatch([("broadcast", 1, "{}")])
    hub.close()
    hub.dispatch([("broadcast", 3, "{}")])  # no flusher any more: it must not wait for 2
    assert follower.got == [1, 3]
