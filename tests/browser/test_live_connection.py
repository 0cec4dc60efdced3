"""Stories of a real person in a real browser: signing in goes live, notifications arrive exactly
once, a crashed worker is survived, signing out is shown, and two tabs both stay current."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import (
    WAIT_MS,
    received,
    record_notifications,
    user_id,
    wait_for_count,
)
from tests.support.sockets import Client, publisher

#: What Chromium logs on its own when a handshake or the /ws/check probe is refused: expected
#: in the stories where the server really refuses, an error everywhere else.
REFUSED_HANDSHAKE = r"WebSocket connection to 'ws://[^']+/ws' failed"
REFUSED_PROBE = r"Failed to load resource: the server responded with a status of 401"


@pytest.fixture(scope="module")
def jobs(server):
    """The site's background job: publishes from outside the server, through the database and
    Redis, like a cron job or a queue worker would."""
    return publisher(server)


def live(page) -> None:
    expect(page.locator("#rt-status")).to_have_attribute("data-state", "live")


def notify(jobs, uid: str, count: int, label: str) -> list[int]:
    return [jobs.notify(uid, "notification", {"title": f"{label} {n}"}).seq for n in range(count)]


def test_logging_in_turns_the_connection_indicator_live(browsing):
    page = browsing.login("alice")
    status = page.locator("#rt-status")
    live(page)
    expect(status).to_have_text("live")
    # The dot is the signal people glance at: live must not look like offline.
    dot = "el => getComputedStyle(el, '::before').color"
    live_color = status.evaluate(dot)
    page.evaluate("() => { document.getElementById('rt-status').dataset.state = 'offline'; }")
    offline_color = status.evaluate(dot)
    page.evaluate("() => { document.getElementById('rt-status').dataset.state = 'live'; }")
    assert live_color != offline_color


def test_a_notification_for_me_arrives_in_my_page_exactly_once(browsing, jobs):
    page = browsing.login("alice")
    live(page)
    record_notifications(page)
    sent = notify(jobs, user_id(page), 3, "hello")
    got = wait_for_count(page, len(sent))
    assert [m["id"] for m in got] == sent
    assert [m["data"]["title"] for m in got] == ["hello 0", "hello 1", "hello 2"]
    assert {m["stream"] for m in got} == {f"user:{user_id(page)}"}


def test_two_tabs_of_one_person_both_go_live_and_both_get_the_notification(browsing, jobs):
    context = browsing.new_context()
    first = browsing.login("bob", browsing.new_page(context))
    second = browsing.new_page(context)
    second.goto("/")
    for page in (first, second):
        live(page)
        record_notifications(page)
    sent = notify(jobs, user_id(first), 2, "both tabs")
    for page in (first, second):
        assert [m["id"] for m in wait_for_count(page, 2)] == sent


def test_a_page_whose_session_is_gone_says_signed_out_instead_of_retrying(browsing):
    """The cookie disappears (expired, cleared); the next reconnect is refused, the client asks
    /ws/check why, hears 401 and stops for good."""
    browsing.errors.allow(REFUSED_HANDSHAKE, REFUSED_PROBE)
    page = browsing.login("alice")
    live(page)
    page.context.clear_cookies()
    page.evaluate("() => TidingsRealtime.ws.close()")
    status = page.locator("#rt-status")
    expect(status).to_have_attribute("data-state", "signedout")
    expect(status).to_have_text("signed out")
    assert page.evaluate("() => TidingsRealtime.stopped") is True


def test_logging_out_in_another_tab_closes_my_sockets_with_4001(browsing, server):
    """Logout calls realtime.disconnect_user: every socket of that session closes with 4001 in
    every worker, and the open tab says so rather than reconnecting."""
    context = browsing.new_context()
    watched = browsing.login("admin", browsing.new_page(context))
    live(watched)
    watched.evaluate(
        "() => TidingsRealtime.ws.addEventListener('close', e => { window.__closeCode = e.code; })"
    )
    # An independent client on the same session sees the close frame itself.
    http = requests.Session()
    for cookie in context.cookies():
        http.cookies.set(cookie["name"], cookie["value"])
    observer = Client(server, http)
    try:
        other = browsing.new_page(context)
        other.goto("/")
        other.get_by_role("button", name="Log out").click()
        other.wait_for_url("**/auth/login")
        code, reason = observer.close_frame(timeout=WAIT_MS / 1000)
        assert (code, reason) == (4001, "signed out")
    finally:
        observer.close()
    expect(watched.locator("#rt-status")).to_have_attribute("data-state", "signedout")
    assert watched.evaluate("() => window.__closeCode") == 4001


def test_a_network_blip_shows_offline_then_live_again_and_loses_nothing(browsing, jobs):
    """The browser says the network went away and came back while the socket itself survived:
    the indicator must not stay "offline" over a working connection."""
    page = browsing.login("alice")
    live(page)
    record_notifications(page)
    status = page.locator("#rt-status")
    page.context.set_offline(True)
    expect(status).to_have_attribute("data-state", "offline")
    sent = notify(jobs, user_id(page), 1, "during the blip")
    page.context.set_offline(False)
    live(page)
    sent += notify(jobs, user_id(page), 1, "after the blip")
    assert [m["id"] for m in wait_for_count(page, 2)] == sent


def test_killing_the_workers_reconnects_and_replays_what_was_missed_exactly_once(
    browsing, server, jobs
):
    """SIGKILL is a crash: no close frame, no goodbye. The page notices, shows reconnecting,
    comes back live on a fresh worker and resumes from its cursor (runs last: it restarts the
    module's server)."""
    page = browsing.login("bob")
    live(page)
    record_notifications(page)
    uid = user_id(page)
    before = notify(jobs, uid, 1, "before")
    wait_for_count(page, 1)

    killed = server.worker_pids()
    assert len(killed) == 2
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    page.wait_for_function("() => window.__states.includes('reconnecting')", timeout=WAIT_MS)
    during = notify(jobs, uid, 3, "while down")

    live(page)
    after = notify(jobs, uid, 1, "after")
    got = wait_for_count(page, 5)
    assert [m["id"] for m in got] == before + during + after
    states = page.evaluate("() => window.__states")
    assert "reconnecting" in states and states[-1] == "live", states
    assert set(server.worker_pids()).isdisjoint(killed)

    # Leave the module's server whole for anything that runs after.
    deadline = time.monotonic() + WAIT_MS / 1000
    while len(server.worker_pids()) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace its workers"
        time.sleep(0.1)
    assert len(received(page)) == 5
