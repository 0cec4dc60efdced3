"""Every frame a client sends costs, and an unfinished message is bounded: the inbound meter,
frame by frame, without a server (flask_tidings/inbound.py)."""

from __future__ import annotations

import pytest

from flask_tidings.inbound import Action, InboundLimits, InboundMeter, TokenBucket

LIMITS = InboundLimits(max_message_bytes=64 * 1024, max_fragments=32, message_timeout=10.0,
                       rate=20.0, burst=40, flood_close_after=100)


def meter(**changes) -> InboundMeter:
    return InboundMeter(InboundLimits(**{**LIMITS.__dict__, **changes}), now=0.0)


def whole(m: InboundMeter, text: str, now: float = 0.0):
    return m.text(text, frame_finished=True, message_finished=True, now=now)


def fragment(m: InboundMeter, text: str = "", now: float = 0.0, last: bool = False):
    return m.text(text, frame_finished=True, message_finished=last, now=now)


def test_a_whole_message_is_delivered_as_sent():
    outcome = whole(meter(), '{"type":"ping"}')
    assert (outcome.action, outcome.text) == (Action.DELIVER, '{"type":"ping"}')


def test_fragments_are_assembled_into_one_message():
    m = meter()
    assert fragment(m, '{"type":').action is Action.PASS
    assert fragment(m, '"ping"').action is Action.PASS
    outcome = fragment(m, "}", last=True)
    assert (outcome.action, outcome.text) == (Action.DELIVER, '{"type":"ping"}')


def test_empty_continuation_frames_forever_end_in_a_close():
    m = meter()
    fragment(m, '{"type":')
    outcomes = [fragment(m).action for _ in range(1000)]
    assert Action.CLOSE in outcomes
    assert outcomes.index(Action.CLOSE) < 100


def test_a_message_in_more_frames_than_allowed_closes_with_1008():
    m = meter(max_fragments=4, burst=1000)
    for _ in range(4):
        assert fragment(m, "x").action is Action.PASS
    outcome = fragment(m, "x")
    assert (outcome.action, outcome.code) == (Action.CLOSE, 1008)


def test_a_message_left_unfinished_past_the_timeout_closes_with_1008():
    m = meter(message_timeout=5.0)
    fragment(m, '{"type":', now=0.0)
    assert m.overdue(4.9) is None
    outcome = m.overdue(5.1)
    assert (outcome.action, outcome.code) == (Action.CLOSE, 1008)
    assert "unfinished" in outcome.reason


def test_a_late_fragment_of_an_overdue_message_closes_too():
    m = meter(message_timeout=5.0)
    fragment(m, '{"type":', now=0.0)
    outcome = fragment(m, '"ping"}', now=6.0, last=True)
    assert (outcome.action, outcome.code) == (Action.CLOSE, 1008)


def test_the_size_limit_counts_utf8_bytes_not_characters():
    emoji = "😀" * 20_000  # 20,000 characters, 80,000 bytes
    outcome = whole(meter(), emoji)
    assert (outcome.action, outcome.code) == (Action.CLOSE, 1009)
    ascii_ok = whole(meter(), "x" * 60_000)
    assert ascii_ok.action is Action.DELIVER


def test_the_size_limit_adds_up_across_fragments():
    m = meter(max_message_bytes=100)
    assert fragment(m, "é" * 40).action is Action.PASS  # 80 bytes
    outcome = fragment(m, "é" * 11, last=True)  # 102 bytes in all
    assert (outcome.action, outcome.code) == (Action.CLOSE, 1009)


def test_one_large_frame_handed_over_in_pieces_costs_one_token():
    m = meter(burst=1, rate=0.0)
    assert m.text("a" * 10, frame_finished=False, message_finished=False, now=0).action \
        is Action.PASS
    assert m.text("b" * 10, frame_finished=False, message_finished=False, now=0).action \
        is Action.PASS
    outcome = m.text("c", frame_finished=True, message_finished=True, now=0)
    assert (outcome.action, outcome.text) == (Action.DELIVER, "a" * 10 + "b" * 10 + "c")


@pytest.mark.parametrize("kind", ["ping", "pong"])
def test_pings_and_pongs_cost_tokens_go_unanswered_over_the_rate_then_close_4029(kind):
    m = meter()
    actions = [m.control(now=0.0).action for _ in range(LIMITS.burst)]
    assert actions == [Action.PASS] * LIMITS.burst
    dropped = [m.control(now=0.0).action for _ in range(LIMITS.flood_close_after)]
    assert dropped == [Action.DROP] * LIMITS.flood_close_after
    outcome = m.control(now=0.0)
    assert (outcome.action, outcome.code) == (Action.CLOSE, 4029)


def test_pings_and_messages_share_one_bucket():
    m = meter(burst=3, rate=0.0)
    m.control(now=0.0)
    m.control(now=0.0)
    assert whole(m, "{}").action is Action.DELIVER
    assert whole(m, "{}").action is Action.REFUSE


def test_the_bucket_refills_at_the_rate():
    m = meter(burst=2, rate=10.0)
    assert [whole(m, "{}", now=0.0).action for _ in range(3)] == [
        Action.DELIVER, Action.DELIVER, Action.REFUSE]
    assert whole(m, "{}", now=0.1).action is Action.DELIVER


def test_a_message_refused_midway_is_told_once_and_its_rest_is_dropped():
    m = meter(burst=2, rate=0.0)
    assert fragment(m, '{"type":').action is Action.PASS
    assert fragment(m, '"pi').action is Action.PASS
    assert fragment(m, 'ng"').action is Action.REFUSE
    assert fragment(m, "}", last=True).action is Action.DROP
    # The next message starts clean (and is refused for want of tokens, not garbled).
    assert whole(m, "{}").action is Action.REFUSE


def test_the_time_a_socket_was_held_unread_is_credited_back():
    # The client kept to 10/s while the reactor did not read it for 3 s: 30 messages, one read.
    m = meter(burst=5, rate=10.0)
    m.held(3.0)
    assert [whole(m, "{}", now=3.0).action for _ in range(5 + 30)] == [Action.DELIVER] * 35
    assert whole(m, "{}", now=3.0).action is Action.REFUSE


def test_a_message_being_sent_while_the_socket_was_held_is_not_overdue():
    m = meter(message_timeout=5.0)
    fragment(m, '{"type":', now=0.0)
    m.held(4.0)
    assert m.overdue(8.0) is None
    assert fragment(m, '"ping"}', now=8.0, last=True).action is Action.DELIVER


def test_one_users_sockets_share_one_command_budget():
    shared = TokenBucket(rate=0.0, burst=30, now=0.0)
    sockets = [InboundMeter(LIMITS, now=0.0, shared=shared) for _ in range(20)]
    actions = [whole(m, "{}").action for _ in range(10) for m in sockets]
    assert actions.count(Action.DELIVER) == 30
    assert actions.count(Action.REFUSE) == 200 - 30
    assert sum(m.refused_shared for m in sockets) == 170


def test_a_socket_within_its_own_rate_is_not_closed_for_its_users_budget():
    shared = TokenBucket(rate=0.0, burst=0, now=0.0)
    m = InboundMeter(InboundLimits(**{**LIMITS.__dict__, "flood_close_after": 3}), now=0.0,
                     shared=shared)
    assert [whole(m, "{}").action for _ in range(10)] == [Action.REFUSE] * 10
    # Over its own rate, it is closed as before.
    own = [whole(m, "{}").action for _ in range(LIMITS.burst)]
    assert own[-1] is Action.CLOSE


def test_pings_and_fragments_do_not_spend_the_users_budget():
    shared = TokenBucket(rate=0.0, burst=1, now=0.0)
    m = InboundMeter(LIMITS, now=0.0, shared=shared)
    m.control(now=0.0)
    assert fragment(m, '{"type":').action is Action.PASS
    assert fragment(m, '"ping"}', last=True).action is Action.DELIVER
    assert whole(m, "{}").action is Action.REFUSE


def test_the_flood_close_counts_every_refused_frame():
    m = meter(burst=1, rate=0.0, flood_close_after=3)
    assert whole(m, "{}").action is Action.DELIVER
    assert [whole(m, "{}").action for _ in range(3)] == [Action.REFUSE] * 3
    outcome = whole(m, "{}")
    assert (outcome.action, outcome.code, outcome.reason) == (Action.CLOSE, 4029,
                                                              "too many messages")
