"""The browser client comes back when a restarting server says, not on its own generic backoff,
and keeps retrying briskly while the new server is not up yet (realtime.js in Node, with a
stand-in browser: tests/realtime/js/reconnect.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

HARNESS = Path(__file__).parent / "js" / "reconnect.js"


def delays(scenario: str) -> list[float]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; `make test` installs it (scripts/browser-deps.sh)")
    result = subprocess.run([node, str(HARNESS), scenario], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["delays"]


def test_a_restart_close_is_followed_by_a_reconnect_when_the_server_said():
    assert delays("told") == [1700]


def test_a_going_away_close_without_a_time_reconnects_within_a_second():
    [delay] = delays("untold")
    assert 0 <= delay < 1000


def test_while_the_restarted_server_is_not_up_retries_stay_at_most_five_seconds_apart():
    got = delays("server-still-down")
    assert got[0] == 400  # the server's own moment first
    assert len(got) == 13
    # The generic backoff would be up to 20 s apart by now.
    assert max(got[1:]) <= 5000


def test_at_connect_the_client_subscribes_all_its_streams_in_one_message_and_retries_one():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; `make test` installs it (scripts/browser-deps.sh)")
    result = subprocess.run([node, str(HARNESS.with_name("subscribe.js"))], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    first, *later = got["sent"]
    assert first == {"type": "subscribe", "ref": first["ref"], "streams": [
        {"stream": "user:1", "after": 5}, {"stream": "broadcast"}, {"stream": "role:user"}]}
    # Only the stream the server could not serve is asked for again, in the one-stream form.
    assert got["retries"] == 1
    assert [(m["type"], m["stream"]) for m in later] == [("subscribe", "role:user")]


def test_a_server_from_before_the_several_streams_form_gets_one_subscribe_per_stream():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; `make test` installs it (scripts/browser-deps.sh)")
    result = subprocess.run([node, str(HARNESS.with_name("subscribe.js")), "old-server"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    first, *later = json.loads(result.stdout)["sent"]
    assert "streams" in first
    assert [(m.get("stream"), m.get("after")) for m in later] == [
        ("user:1", 5), ("broadcast", None), ("role:user", None)]
