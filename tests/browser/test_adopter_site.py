"""The example site of tests/adopter (its own session login, sqlite3, ten added lines) in Chromium,
under gunicorn with its gunicorn.conf.py (two gthread workers, the one-line hook), SQLite and no
Redis: a message published by another process appears on the open page at once."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.adopter.serve import MEMBERS, cli, start_site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    server = start_site("gunicorn", tmp_path_factory.mktemp("adopter"), workers=2)
    yield server
    server.stop()


def log_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(MEMBERS[username])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who")).to_have_text(username)
    # The site shows no connection indicator; the client's own state says when it is live.
    page.wait_for_function("() => window.TidingsRealtime && TidingsRealtime.state === 'live'")


@pytest.fixture
def member_page(browser, site, page_errors):
    """Log a member in, in a fresh browser profile; the test fails on any JS error a page logs."""
    contexts = []

    def open_as(username: str) -> Page:
        context = browser.new_context(base_url=site.url)
        contexts.append(context)
        page = context.new_page()
        page_errors.watch(page)
        log_in(page, username)
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert page_errors.unexpected() == []


def test_a_reminder_sent_by_cron_appears_on_the_open_page_at_once(site, member_page):
    page = member_page("alice")
    expect(page.locator("#messages li")).to_have_count(0)

    cli(site, "remind", "alice", "Your invoice is due <b>tomorrow</b>")

    shown = page.locator("#messages li")
    expect(shown).to_have_count(1)
    expect(shown).to_have_text("reminders: Your invoice is due <b>tomorrow</b>")  # text, not HTML


def test_a_message_from_another_member_appears_without_a_reload(site, member_page):
    alice = member_page("alice")
    before = alice.locator("#messages li").count()
    bob = member_page("bob")
    bob.locator("select[name=to]").select_option("alice")
    bob.locator("input[name=body]").fill("Coffee at 3?")
    bob.get_by_role("button", name="Send").click()
    expect(bob.locator(".flash")).to_have_text("Sent.")

    expect(alice.locator("#messages li")).to_have_count(before + 1)
    expect(alice.locator("#messages li").first).to_have_text("bob: Coffee at 3?")
