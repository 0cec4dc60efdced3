"""The browser client (flask_tidings/static/realtime.js) in Chromium: it retries a subscribe the
server could not serve, and handles a ``reset`` (by default, by reloading the page)."""

from __future__ import annotations

import json
import sqlite3
import time

from tests.browser.conftest import user_id, wait_live
from tests.support.sockets import publisher

BOUND = 20.0


def subscribes(frames: list[str], stream: str) -> list[dict]:
    found = []
    for frame in frames:
        try:
            message = json.loads(frame)
        except ValueError:
            continue
        if message.get("type") == "subscribe" and message.get("stream") == stream:
            found.append(message)
    return found


def test_a_subscribe_the_server_could_not_serve_is_retried_until_live(browsing, server):
    page = browsing.new_page()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    browsing.login("alice", page)
    wait_live(page)
    database = server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database, timeout=10) as db:
        db.execute("ALTER TABLE realtime_streams RENAME TO realtime_streams_away")
    try:
        before = len(subscribes(sent, "broadcast"))
        page.evaluate("""() => {
          window.__announced = [];
          TidingsRealtime.on("announcement", function (m) { window.__announced.push(m.id); });
          TidingsRealtime.unfollow("broadcast");
          TidingsRealtime.follow("broadcast");
        }""")
        deadline = time.monotonic() + BOUND
        while len(subscribes(sent, "broadcast")) < before + 2:  # the first, then a retry
            assert time.monotonic() < deadline, sent
            page.wait_for_timeout(100)
    finally:
        with sqlite3.connect(database, timeout=10) as db:
            db.execute("ALTER TABLE realtime_streams_away RENAME TO realtime_streams")
    tries = subscribes(sent, "broadcast")[before:]
    assert len({message["ref"] for message in tries}) == len(tries)  # each try its own ref
    page.wait_for_function("() => TidingsRealtime.followed['broadcast'] === true",
                           timeout=BOUND * 1000)
    seq = publisher(server).broadcast("announcement", {"title": "after the outage"})[0].seq
    page.wait_for_function("id => window.__announced.includes(id)", arg=seq,
                           timeout=BOUND * 1000)


def test_a_reset_goes_to_the_page_or_reloads_it(browsing, server):
    page = browsing.login("alice")
    wait_live(page)
    stream = f"user:{user_id(page)}"
    jobs = publisher(server)
    for n in range(3):
        jobs.notify(user_id(page), "notification", {"title": f"old {n}"})
    # Retention has pruned this stream's events since (all of them, as if they aged out).
    database = server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database, timeout=10) as db:
        db.execute("DELETE FROM realtime_events WHERE stream = ?", (stream,))

    # A page that can refresh itself handles the reset; its socket goes on.
    page.evaluate("""stream => {
      window.__resets = [];
      TidingsRealtime.on("reset", function (m) { window.__resets.push(m); });
      TidingsRealtime.cursors[stream] = 0;   // as if it had been away since the beginning
      TidingsRealtime.ws.close();
    }""", stream)
    page.wait_for_function("() => window.__resets.length === 1", timeout=BOUND * 1000)
    [reset] = page.evaluate("() => window.__resets")
    assert reset["stream"] == stream and reset["head"] >= 3

    # A page with no handler for it reloads: what it shows is rebuilt from the database.
    other = browsing.new_page(page.context)
    other.goto("/")
    wait_live(other)
    other.evaluate("() => { window.__before_reload = true; }")
    with other.expect_navigation(timeout=BOUND * 1000):
        other.evaluate("""stream => {
          TidingsRealtime.cursors[stream] = 0;
          TidingsRealtime.ws.close();
        }""", stream)
    wait_live(other)
    assert other.evaluate("() => window.__before_reload === undefined")
