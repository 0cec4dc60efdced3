"""Retention (issue 14): the durable log is pruned by age and by count per stream, in bounded
batches, by the sweep thread; a client resuming from before what is kept is told (``reset``)
instead of being silently skipped ahead."""

from __future__ import annotations

import time

from sqlalchemy import event

from tests.realtime.local import LocalClient, make_app

BOUND = 15.0


def stored(state, stream: str) -> list[int]:
    return [seq for seq, _ in state.store.read_since(stream, 0, 10_000)]


def next_of(client: LocalClient, *types: str) -> dict:
    while True:
        message = client.recv(timeout=BOUND)
        if message.get("type") in types or ("id" in message and "event" in types):
            return message


def test_resuming_from_before_the_kept_events_gets_a_reset_then_goes_live(tmp_path):
    _, realtime, state = make_app(tmp_path, RETENTION_PER_STREAM=10, RETENTION_SECONDS=0)
    try:
        stream = "user:reader"
        for n in range(30):
            realtime.publish(stream, "note", {"n": n})
        assert state.prune() == 20
        assert stored(state, stream) == list(range(21, 31))
        assert state.store.head(stream) == 30  # numbers are never reused

        behind = LocalClient(state, "reader")
        behind.send({"type": "subscribe", "stream": stream, "after": 0, "ref": "1"})
        assert next_of(behind, "subscribed")["after"] == 0
        assert next_of(behind, "reset", "event") == {"type": "reset", "stream": stream,
                                                     "head": 30}
        # Within the window a resume is exact, and no reset.
        recent = LocalClient(state, "reader")
        recent.send({"type": "subscribe", "stream": stream, "after": 25, "ref": "2"})
        assert next_of(recent, "subscribed")["after"] == 25
        assert [next_of(recent, "reset", "event")["id"] for _ in range(5)] == [26, 27, 28, 29, 30]

        live = realtime.publish(stream, "note", {"n": "live"}).seq
        assert next_of(behind, "reset", "event")["id"] == live == 31
        assert next_of(recent, "reset", "event")["id"] == live
        behind.close()
        recent.close()
    finally:
        state.stop()


def test_a_stream_whose_events_all_aged_out_resets_a_client_that_was_behind(tmp_path):
    _, realtime, state = make_app(tmp_path)
    try:
        stream = "user:old"
        for n in range(5):
            realtime.publish(stream, "note", {"n": n})
        # A week and a day later (as far as the pruner can tell): every event is too old.
        assert state.store.prune(max_age=7 * 86400, per_stream=None,
                                 now=time.time() + 8 * 86400) == 5
        assert stored(state, stream) == []

        client = LocalClient(state, "old")
        client.send({"type": "subscribe", "stream": stream, "after": 2, "ref": "1"})
        assert next_of(client, "subscribed")["head"] == 5
        assert next_of(client, "reset", "event") == {"type": "reset", "stream": stream,
                                                     "head": 5}
        up_to_date = LocalClient(state, "old")
        up_to_date.send({"type": "subscribe", "stream": stream, "after": 5, "ref": "2"})
        assert next_of(up_to_date, "subscribed")["after"] == 5
        assert realtime.publish(stream, "note", {}).seq == 6
        assert next_of(client, "reset", "event")["id"] == 6
        assert next_of(up_to_date, "reset", "event")["id"] == 6  # no reset for this one
        client.close()
        up_to_date.close()
    finally:
        state.stop()


def test_pruning_goes_in_small_transactions_and_stops_at_its_time_budget(tmp_path):
    _, realtime, state = make_app(tmp_path)
    try:
        for stream in ("user:a", "user:b", "user:c"):
            for n in range(40):
                realtime.publish(stream, "note", {"n": n})
        commits: list[int] = []
        event.listen(state.store.engine, "commit", lambda conn: commits.append(1))
        assert state.store.prune(max_age=None, per_stream=5, batch=7, budget=30) == 3 * 35
        assert len(commits) >= 3 * 5  # 35 rows per stream, at most 7 per transaction
        assert [stored(state, s) for s in ("user:a", "user:b", "user:c")] == [
            list(range(36, 41))] * 3
        # With no time at all, one batch at most is done; the next pass does the rest.
        for n in range(20):
            realtime.publish("user:a", "note", {"n": n})
        assert state.store.prune(max_age=None, per_stream=5, batch=7, budget=0) <= 7
    finally:
        state.stop()


def test_the_sweep_thread_prunes_by_itself(tmp_path):
    _, realtime, state = make_app(tmp_path, RETENTION_PER_STREAM=3, RETENTION_INTERVAL=0.3,
                                  SWEEP_INTERVAL=0.1)
    try:
        for n in range(10):
            realtime.publish("user:busy", "note", {"n": n})
        deadline = time.monotonic() + BOUND
        while stored(state, "user:busy") != [8, 9, 10]:
            assert time.monotonic() < deadline, stored(state, "user:busy")
            time.sleep(0.1)
    finally:
        state.stop()
