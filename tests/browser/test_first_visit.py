"""A first visit in Chromium: what Tidings is, an account in one step, and forms that say what
is wrong where it is wrong. Any failed load (a missing favicon included) fails the story."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect


@pytest.mark.parametrize("viewport", [{"width": 1200, "height": 800},
                                      {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_a_visitor_learns_what_tidings_is_registers_and_is_welcomed(browsing, viewport):
    page = browsing.new_page(browsing.new_context(viewport=viewport))
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("News that reaches everyone")
    expect(page.get_by_text("Please log in")).to_have_count(0)
    page.get_by_role("link", name="Create an account").click()

    name = f"newcomer{uuid.uuid4().hex[:6]}"
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Repeat password").fill("short")
    page.get_by_role("button", name="Create account").click()

    # The error is on the field itself, for screen readers too, next to the hint.
    password = page.get_by_label("Password", exact=True)
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_accessible_description(
        "At least 8 characters, not only digits, and not your username. "
        "Password must be at least 8 characters.")

    password.fill(f"{name}-password-1")
    page.get_by_label("Repeat password").fill(f"{name}-password-1")
    page.get_by_role("button", name="Create account").click()

    # Straight to the dashboard, logged in, greeted once.
    page.wait_for_url(browsing.server.url + "/")
    expect(page.locator(".who")).to_have_text(name)
    expect(page.locator(".flash--success")).to_have_text(f"Welcome, {name}. Your account is ready.")


def test_the_site_answers_for_its_icon(browsing):
    page = browsing.new_page()
    response = page.goto("/favicon.ico")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
