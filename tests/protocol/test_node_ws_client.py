"""Node's `ws` package, a client we did not write, speaks the protocol with our server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sockets import cookie_header, publisher, ws_url

NODE_DIR = Path(__file__).parent / "node"


def _node_or_skip() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "ws").is_dir():
        problem = f"the ws package is missing in {NODE_DIR} (run scripts/browser-deps.sh)"
    if problem:
        reason = f"!!! Node protocol client NOT RUN: {problem} !!!"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return node


def run_node(server, http, steps: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """Run client.js with these steps; return its exit code and its JSON lines."""
    result = subprocess.run(
        [_node_or_skip(), str(NODE_DIR / "client.js"), ws_url(server), server.url,
         cookie_header(http), json.dumps(steps)],
        capture_output=True, text=True, timeout=30,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines


def messages(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["message"] for line in lines if line["event"] == "message"]


def test_node_client_is_welcomed_resumes_with_after_and_pings(server, alice):
    jobs = publisher(server)
    # First a plain run to learn alice's id from the welcome.
    code, lines = run_node(server, alice, [{"expect": "welcome"}, {"close": 1000},
                                           {"wait_close": True}])
    assert code == 0, lines
    uid = messages(lines)[0]["user"]
    stream = f"user:{uid}"
    missed = [jobs.notify(uid, "notification", {"n": n}).seq for n in range(3)]
    after = missed[0] - 1

    code, lines = run_node(server, alice, [
        {"expect": "welcome"},
        {"send": {"type": "subscribe", "stream": stream, "after": after, "ref": "s"}},
        {"expect": "subscribed"},
        {"expect": "notification", "count": 3},
        {"send": {"type": "ping", "ref": 7}},
        {"expect": "pong"},
        {"ping": "are you there"},
        {"close": 4000},
        {"wait_close": True},
    ])
    assert code == 0, lines
    got = messages(lines)
    subscribed = next(m for m in got if m["type"] == "subscribed")
    assert (subscribed["stream"], subscribed["after"], subscribed["ref"]) == (stream, after, "s")
    assert [m["id"] for m in got if m["type"] == "notification"] == missed
    assert next(m for m in got if m["type"] == "pong")["ref"] == 7
    assert {"event": "pong", "payload": "are you there"} in lines
    assert lines[-1]["event"] == "close" and lines[-1]["code"] == 4000


def test_node_client_sending_binary_is_closed_with_1003(server, alice):
    code, lines = run_node(server, alice, [{"expect": "welcome"}, {"binary": "\u0001\u0002"},
                                           {"wait_close": True}])
    assert code == 0, lines
    assert lines[-1]["event"] == "close" and lines[-1]["code"] == 1003
