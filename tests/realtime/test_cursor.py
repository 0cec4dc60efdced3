"""The per-stream state machine, event by event, with no server: what a connection does when
live pushes and reads of the log race (flask_tidings/cursor.py)."""

from __future__ import annotations

from flask_tidings.cursor import RETRY_FIRST, RETRY_MAX, Step, StreamCursor

NOW = 1000.0


def live(after: int = 0) -> StreamCursor:
    """A stream that has caught up to ``after`` and is live."""
    cursor = StreamCursor(after=after, pending=True)
    cursor.start_at(head=after, since=None)
    assert cursor.finish()
    return cursor


def test_a_live_stream_writes_each_next_event_once():
    cursor = live(after=3)
    assert cursor.offer(4, NOW) is Step.WRITE
    assert cursor.offer(4, NOW) is Step.NONE  # the same event again (two brokers, a replay)
    assert cursor.offer(2, NOW) is Step.NONE
    assert cursor.cursor == 4


def test_a_gap_reads_the_log_and_events_meanwhile_wait_for_it():
    cursor = live(after=3)
    assert cursor.offer(6, NOW) is Step.CATCH_UP  # 4 and 5 are still on their way, or lost
    assert cursor.offer(7, NOW) is Step.NONE  # noted, not written out of order
    assert cursor.seen == 7
    for seq in (4, 5, 6):
        assert cursor.replayed(seq)
        cursor.wrote(seq)
    assert not cursor.finish()  # 7 arrived during the read: read again
    assert cursor.replayed(7)
    cursor.wrote(7)
    assert cursor.finish()
    assert cursor.offer(8, NOW) is Step.WRITE


def test_a_subscribe_from_a_cursor_starts_there_and_a_late_start_keeps_what_came_meanwhile():
    resumed = StreamCursor(after=5, ref="r1", pending=True)
    assert resumed.start_at(head=9, since=None) == (5, "r1")
    assert resumed.start_at(head=9, since=None) is None  # fixed once

    fresh = StreamCursor(pending=True)
    assert fresh.offer(8, NOW) is Step.NONE  # a live event before the head could be read
    assert fresh.start_at(head=9, since=None) == (7, None)  # 8 is not skipped


def test_a_failed_read_backs_off_and_the_next_event_or_nudge_repairs_it():
    cursor = StreamCursor(ref="r2", pending=True)
    delay, tell, ref = cursor.fail(NOW)
    assert (delay, tell, ref) == (RETRY_FIRST, True, "r2")
    assert cursor.offer(1, NOW) is Step.NONE  # too early to retry
    assert cursor.offer(2, NOW + delay) is Step.CATCH_UP  # a later event retries
    delay, tell, _ = cursor.fail(NOW + 1)
    assert delay == 2 * RETRY_FIRST and tell  # a subscribe still owed its answer is told
    assert cursor.nudge(head=2, backlog=False, now=NOW + 1 + delay) is Step.CATCH_UP  # the sweep
    for _ in range(20):
        delay, _, _ = cursor.fail(NOW)
    assert delay == RETRY_MAX


def test_a_live_stream_whose_reads_keep_failing_tells_the_client_once():
    cursor = live(after=3)
    assert cursor.offer(5, NOW) is Step.CATCH_UP
    assert cursor.fail(NOW)[1] is True
    assert cursor.fail(NOW)[1] is False
    assert cursor.fail(NOW)[1] is False


def test_a_new_subscribe_retries_a_failed_stream_and_is_answered():
    cursor = StreamCursor(ref="r1", pending=True)
    cursor.fail(NOW)
    assert cursor.resubscribe("r3")
    assert cursor.needs_since  # a start fixed late must not skip what came after the ask
    assert cursor.start_at(head=4, since=2) == (2, "r3")
    assert not cursor.resubscribe("r4")  # a healthy stream only gets its "subscribed" again


def test_the_sweep_reads_the_log_for_a_stream_left_behind_but_not_for_a_slow_reader():
    cursor = live(after=3)
    assert cursor.nudge(head=5, backlog=True, now=NOW) is Step.NONE
    assert cursor.nudge(head=3, backlog=False, now=NOW) is Step.NONE
    assert cursor.nudge(head=5, backlog=False, now=NOW) is Step.CATCH_UP
    assert cursor.seen == 5


def test_a_pruned_log_moves_the_cursor_to_the_head():
    cursor = StreamCursor(after=2, pending=True)
    cursor.start_at(head=50, since=None)
    cursor.skipped_to(40)
    assert cursor.cursor == 40 and cursor.finish()
