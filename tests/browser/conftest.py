"""Browser fixtures: Debian's Chromium driven by Playwright, a real two-worker gunicorn with Redis,
and pages that log in through the real form and fail the test on any JS error or CSP violation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.support import services
from tests.support.live import ROOT, LiveServer, start_live_server

#: Debian's package; Playwright's own browser downloads are unreachable here (registries only).
CHROMIUM = "/usr/bin/chromium"

#: Flags that keep a headless Chromium quiet, deterministic and off the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Where each story's final state is photographed (gitignored). Tests never write tracked files:
#: the pictures in docs/ come from ``make screenshots`` (scripts/screenshots.py).
ARTIFACTS = ROOT / "test-artifacts" / "browser"

#: The two screens every numbered story of issue 16 is tried on.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 800}
VIEWPORTS = {"phone": PHONE, "desktop": DESKTOP}

#: axe-core, installed by scripts/browser-deps.sh (npm, gitignored node_modules).
AXE_SCRIPT = ROOT / "tests" / "browser" / "node" / "node_modules" / "axe-core" / "axe.min.js"

#: Playwright's auto-waiting expectations give a reconnect through a worker restart time to land.
WAIT_MS = 15_000

DEMO_PASSWORDS = {"alice": "alice-demo-pass", "bob": "bob-demo-pass", "admin": "admin-demo-pass"}

expect.set_options(timeout=WAIT_MS)

# Reported as console errors too, but the securitypolicyviolation event names the blocked thing
# precisely. Init scripts run outside the page's CSP, so this listener is itself never blocked.
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});
"""


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    if not os.path.exists(CHROMIUM):
        reason = (f"!!! {CHROMIUM} is missing: run scripts/browser-deps.sh (installs Debian's "
                  "chromium). Browser end-to-end tests NOT RUN. !!!")
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """Two workers fanning out through Redis: a tab's socket and the publisher rarely share a
    process, and killing the workers is a real outage. Fast heartbeats make dead links visible."""
    live = start_live_server(
        tmp_path_factory.mktemp("browser"),
        workers=2,
        env={
            "REDIS_URL": services.REDIS_URL,
            "REALTIME_REDIS_CHANNEL": f"tidings-browser-{uuid.uuid4().hex[:12]}",
            "REALTIME_HEARTBEAT": "2",
        },
    )
    yield live
    live.stop()


class PageErrors:
    """JS errors, failed loads and CSP violations seen by the pages of one test.

    Anything here fails the test unless it matches a pattern the test expects, e.g. the
    browser's own report of a refused WebSocket handshake in the signed-out story.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, *patterns: str) -> None:
        self.allowed.extend(re.compile(p) for p in patterns)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.seen.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        # The site never opens alert/confirm/prompt: one appearing means injected script ran.
        self.seen.append(f"dialog: {dialog.type} {dialog.message!r}")
        dialog.dismiss()

    def dialogs(self) -> list[str]:
        return [e for e in self.seen if e.startswith("dialog:")]

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            where = msg.location.get("url") or "?"
            self.seen.append(f"console.error: {msg.text} [{where}]")

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(p.search(e) for p in self.allowed)]


class Browsing:
    """What a story needs: fresh browser profiles, pages that log in, and a final screenshot."""

    def __init__(self, browser: Browser, server: LiveServer, errors: PageErrors):
        self.browser = browser
        self.server = server
        self.errors = errors
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []

    def new_context(self, **options: Any) -> BrowserContext:
        """A fresh profile: no cookies, no storage (one person on one device). ``options`` go to
        Playwright's ``new_context`` (e.g. ``locale``); ``screen="phone"`` is a 390x844 touch
        phone, the default a desktop window."""
        screen = options.pop("screen", "desktop")
        if screen == "phone":
            options = {"is_mobile": True, "has_touch": True, **options}
        options = {"base_url": self.server.url, "viewport": VIEWPORTS[screen], **options}
        context = self.browser.new_context(**options)
        context.add_init_script(_CSP_LISTENER)
        context.on("page", self.errors.watch)
        self.contexts.append(context)
        return context

    def new_page(self, context: BrowserContext | None = None) -> Page:
        page = (context or self.new_context()).new_page()
        self.pages.append(page)
        return page

    def login(self, username: str, page: Page | None = None) -> Page:
        """Log in through the real form and land on the dashboard."""
        page = page or self.new_page()
        page.goto("/auth/login")
        page.locator("#username").fill(username)
        page.locator("#password").fill(DEMO_PASSWORDS[username])
        page.locator("form [type=submit]").click()
        page.wait_for_url(self.server.url + "/")
        expect(page.locator(".who")).to_have_text(username)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def browsing(browser, server, page_errors, request) -> Iterator[Browsing]:
    """Opened pages are photographed at the end (test-artifacts/browser/<test>.png); the test
    fails if any page logged an unexpected error or broke the CSP."""
    session = Browsing(browser, server, page_errors)
    yield session
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        live_pages = [p for p in session.pages if not p.is_closed()]
        for index, page in enumerate(live_pages):
            suffix = "" if index == 0 else f"-{index + 1}"
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}{suffix}.png"))
        problems = page_errors.unexpected()
    finally:
        session.close()
    if problems:
        pytest.fail("the pages reported errors:\n  " + "\n  ".join(problems), pytrace=False)


# --- small helpers the stories share ---------------------------------------------------------

#: Registers a recorder for one event type (and the indicator's states) in the page.
RECORD = """
() => {
  window.__got = [];
  window.__states = [];
  withRealtime(function (rt) {
    rt.on("notification", function (m) { window.__got.push(m); });
    rt.on("status", function (s) { window.__states.push(s.state); });
  });
}
"""


def record_notifications(page: Page) -> None:
    page.evaluate(RECORD)


def received(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.__got")


def wait_for_count(page: Page, count: int) -> list[dict[str, Any]]:
    """Wait (auto-waiting, not sleeping) until the page holds ``count`` notifications."""
    page.wait_for_function("n => window.__got.length >= n", arg=count, timeout=WAIT_MS)
    return received(page)


def user_id(page: Page) -> str:
    value = page.locator("body").get_attribute("data-user-id")
    assert value, "a logged-in page carries data-user-id"
    return value


def save_dashboard(page: Page, path: Path) -> None:
    # Finished animations (a toast sliding in) make the picture the same on every run.
    page.screenshot(path=str(path), animations="disabled")


@pytest.fixture(params=list(VIEWPORTS))
def screen(request) -> str:
    """Run the story on a phone (390x844) and on a desktop window."""
    return request.param


def no_sideways_scroll(page: Page) -> int:
    """How many pixels the page is wider than the window (0: nothing scrolls sideways).

    When it is not 0, the widest culprits are printed (they are in the test's output).
    """
    over = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth")
    if over > 0:
        print("wider than the window:", page.evaluate("""() => Array.from(
            document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right
            > window.innerWidth + 1).slice(0, 8).map(e => e.tagName + "." + e.className + " "
            + Math.round(e.getBoundingClientRect().right))"""))
    return over


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")
                   ) -> list[dict[str, Any]]:
    """Run axe-core in the page; the violations of the given impacts, with where they are.

    The script goes in through the DevTools protocol (``evaluate``), which the page's CSP does
    not govern, so the CSP stays exactly as users get it.
    """
    if not AXE_SCRIPT.exists():
        reason = f"{AXE_SCRIPT} is missing: run scripts/browser-deps.sh (npm install axe-core)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT.read_text() + "\n;undefined")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => ({target: n.target.join(" "), html: n.html.slice(0, 200),
                                      summary: n.failureSummary}))}));
    }""")
    return [v for v in result if v["impact"] in impacts]


def wait_live(page: Page) -> None:
    """Wait until the page's socket is open and subscribed (the header's indicator says live)."""
    expect(page.locator("#rt-status")).to_have_attribute("data-state", "live")


def open_tab(context: BrowserContext, browsing: Browsing, path: str = "/") -> Page:
    """Another tab of an already logged-in profile, live."""
    page = browsing.new_page(context)
    page.goto(path)
    wait_live(page)
    return page


def flask_cli(server: LiveServer, *args: str) -> str:
    """Run ``flask <args>`` against the live server's database and broker, the way an operator
    or a cron job does from a shell; returns its output and fails the test if the command does."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi:app", *args],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout

