"""Admin pages in a real browser, on a phone and a desktop (issue 16, item 10): the compose form
asks only for what its audience needs, deactivating an account asks first, and the operations
page answers "are messages arriving quickly, for how many people, any errors?" at a glance."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import no_sideways_scroll, wait_live
from tests.support.sockets import publisher

#: Clock times the chart draws on its time axis ("14:05:30", "2:05:30 PM").
CLOCK = re.compile(r"^\d{1,2}:\d\d:\d\d( ?[AP]M)?$")

#: Records what the page writes on canvases (the chart's axis labels are drawn, not in the DOM).
CANVAS_TEXT = """
window.__canvasText = [];
const fill = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
  window.__canvasText.push(String(text));
  return fill.call(this, text, ...rest);
};
"""


def test_the_compose_form_shows_role_and_usernames_only_for_their_audience(browsing, screen):
    admin = browsing.login("admin", browsing.new_page(browsing.new_context(screen=screen)))
    admin.goto("/admin/announcements")
    role, usernames = admin.locator("#role"), admin.locator("#usernames")
    admin.get_by_label("Everyone", exact=True).check()
    expect(role).to_be_hidden()
    expect(usernames).to_be_hidden()
    admin.get_by_label("Everyone with a role").check()
    expect(role).to_be_visible()
    expect(usernames).to_be_hidden()
    admin.get_by_label("Chosen users").check()
    expect(usernames).to_be_visible()
    expect(role).to_be_hidden()

    # A live preview follows the typing, before anything is sent.
    admin.locator("#title").fill("Lunch is on us")
    preview = admin.locator("#compose-preview")
    expect(preview).to_be_visible()
    expect(preview.locator(".announcement__title")).to_have_text("Lunch is on us")

    # A wrong name is said at the field it belongs to.
    usernames.fill("ghost")
    admin.get_by_role("button", name="Preview").click()
    error = admin.locator("#usernames-error")
    expect(error).to_have_text("Unknown users: ghost")
    expect(admin.locator("#usernames")).to_have_attribute("aria-describedby", "usernames-error")
    expect(admin.locator("#usernames")).to_be_visible()  # still "Chosen users" after the trip


def test_deactivating_an_account_asks_first(browsing, screen):
    admin = browsing.login("admin", browsing.new_page(browsing.new_context(screen=screen)))
    admin.goto("/admin/users")
    row = admin.locator("tr[data-username='bob']")
    row.locator("summary").click()
    question = row.locator(".confirm-inline__box")
    expect(question).to_be_visible()
    expect(question).to_contain_text("Deactivate bob?")
    # Nothing happened yet; the button that acts names bob. Close the question again.
    expect(row.locator("td").nth(2)).to_have_text("active")
    row.locator("summary").click()
    expect(question).to_be_hidden()
    assert no_sideways_scroll(admin) == 0
    # "Deactivate" reads as an action, not as a disabled control: >= 4.5:1 on its background.
    ratio = row.locator("summary").evaluate("""el => {
        const rgb = s => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
        const lum = c => { const [r, g, b] = rgb(c).map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const cs = getComputedStyle(el);
        const [a, b] = [lum(cs.color), lum(cs.backgroundColor)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05);
    }""")
    assert ratio >= 4.5, ratio


@pytest.fixture(scope="module")
def jobs(server):
    return publisher(server)


def test_the_ops_page_answers_at_a_glance_and_keeps_a_burst_in_view(browsing, server, jobs,
                                                                      screen):
    context = browsing.new_context(screen=screen)
    context.add_init_script(CANVAS_TEXT)
    alice = browsing.login("alice", browsing.new_page(browsing.new_context()))
    wait_live(alice)
    admin = browsing.login("admin", browsing.new_page(context))
    admin.goto("/admin/ops")
    wait_live(admin)
    for tile in ("Connected people", "Messages delivered", "Delivery time (p50/p95)", "Errors"):
        expect(admin.get_by_role("heading", name=tile, exact=True)).to_be_visible()
    for jargon in ("Pushback", "dead peers", "broker lag"):
        expect(admin.get_by_text(jargon)).to_have_count(0)
    expect(admin.locator("[data-figure=freshness]")).to_have_text("live")
    headline = admin.locator("#ops-headline")
    expect(headline).to_contain_text("All good")

    # A burst to alice's open page: delivered, timed, no errors.
    uid = alice.locator("body").get_attribute("data-user-id")
    for n in range(20):
        jobs.notify(uid, "notification", {"title": f"burst {n}"})
    delivered = admin.locator('[data-summary="delivered_last_minute"]')
    expect(delivered).to_have_text(re.compile(r"^([2-9]\d|\d{3,})"))
    expect(admin.locator('[data-summary="delivery.p50_ms"]')).to_have_text(re.compile(r"^\d"))
    expect(admin.locator('[data-summary="delivery.p95_ms"]')).to_have_text(re.compile(r"^\d"))
    expect(admin.locator('[data-summary="errors_last_minute"]')).to_have_text("0")
    expect(headline).to_contain_text(re.compile(r"messages reach \d+ (person|people) in"))

    # Seconds after the burst the tile still shows it (a minute's window, not the last second).
    admin.wait_for_function("() => window.__canvasText.length > 0")
    before = int(delivered.text_content().replace(",", "").replace("\u202f", ""))
    admin.wait_for_timeout(4000)
    after = int(delivered.text_content().replace(",", "").replace("\u202f", ""))
    assert after >= before >= 20

    # The chart has a time axis: clock times are drawn under it.
    labels = admin.evaluate("() => window.__canvasText")
    assert any(CLOCK.match(text) for text in labels), labels[-20:]
    assert no_sideways_scroll(admin) == 0
