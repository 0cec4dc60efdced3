"""Property-based: any JSON a client sends gets a defined answer and never changes what it may not.

Every message, however malformed, is answered by exactly one frame (an error, a reply, a pong,
subscribed/unsubscribed) on a socket that stays open, and no stream other than the sender's own
gains an event.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from tests.support.live import start_live_server
from tests.support.sockets import Client

ANSWERS = {"error", "reply", "pong", "subscribed", "unsubscribed"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)

known_types = st.sampled_from([
    "subscribe", "unsubscribe", "ping", "chat.send", "chat.typing", "chat.delete",
    "chat.presence", "notifications.mark_read", "announcement.dismiss", "announcement.seen",
    "ops.stats", "nope", "",
])

messages = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": known_types},
        optional={
            "data": json_values,
            "stream": st.one_of(st.text(max_size=30), json_values,
                                st.sampled_from(["user:1", "role:admin", "room:1", "ops:cluster",
                                                 "broadcast", "room:999999"])),
            "after": st.one_of(st.integers(min_value=-5, max_value=10**12), json_values),
        },
    ),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = start_live_server(
        tmp_path_factory.mktemp("fuzz"), workers=1,
        env={"REALTIME_RATE": "100000", "REALTIME_BURST": "100000", "REALTIME_USER_RATE": "0"},
    )
    yield server
    server.stop()


def foreign_events(server, own_stream: str) -> int:
    engine = create_engine(server.env["DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM realtime_events WHERE stream != :own AND seq IS NOT NULL"),
            {"own": own_stream},
        ).scalar_one()
    engine.dispose()
    return count


def test_any_message_gets_one_defined_answer_and_changes_nothing(fuzz_server, live_login_as):
    # bob is a plain user; whatever he sends must not publish to anyone else's streams.
    client = Client(fuzz_server, live_login_as(fuzz_server, "bob", "bob-demo-pass"))
    own = client.own_stream
    before = foreign_events(fuzz_server, own)
    refs = itertools.count(1)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages)
    def check(message):
        ref = f"fz{next(refs)}"
        if isinstance(message, dict):
            message = {**message, "ref": ref}
        client.ws.send(json.dumps(message))
        while True:
            answer = client.recv(timeout=10)
            if answer.get("type") in ANSWERS and (
                answer.get("ref") == ref or not isinstance(message, dict)
            ):
                break
            # Anything else must be a stored event replayed by a subscribe, not an answer.
            assert "stream" in answer, answer

    check()
    client.send({"type": "ping", "ref": "alive"})
    assert client.expect("pong")["ref"] == "alive"
    assert foreign_events(fuzz_server, own) == before
    client.close()
