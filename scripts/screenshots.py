"""Regenerate the pictures in docs/: the main pages at a desktop and a phone size.

Run with ``make screenshots``. It starts the real site (gunicorn, one worker, a throwaway SQLite
database with the demo accounts), stages an ordinary morning through the real paths (an
operator's announcement, a build notification, bob's chat message) and photographs each page
with Debian's Chromium through Playwright. Tests never write these files; this command does.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from tests.support.forms import csrf_token_from  # noqa: E402
from tests.support.live import live_login, start_live_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SCREENS = {
    "": {"viewport": {"width": 1200, "height": 800}},
    "-phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
               "device_scale_factor": 2},
}
PASSWORDS = {"alice": "alice-demo-pass", "bob": "bob-demo-pass", "admin": "admin-demo-pass"}


def flask(server, *args: str) -> str:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi:app", *args],
                            cwd=ROOT, env=server.env, capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout


def stage(server) -> str:
    """An ordinary morning; returns the id of #general."""
    flask(server, "broadcast", "Maintenance tonight at 22:00", "--body",
          "Tidings will be read-only for about 15 minutes.", "--level", "warning",
          "--author", "admin")
    flask(server, "notify", "alice", "Build #42 passed", "--body", "All checks green on main.",
          "--link", "/notifications")
    bob = live_login(server, "bob", PASSWORDS["bob"])
    rooms = bob.get(server.url + "/chat/", timeout=10).text
    general = re.search(r'href="/chat/(\d+)"[^>]*>#general<', rooms).group(1)
    page = bob.get(f"{server.url}/chat/{general}", timeout=10).text
    bob.post(f"{server.url}/chat/{general}/messages", timeout=10, data={
        "csrf_token": csrf_token_from(page), "body": "Morning @alice! Standup in 5?"},
    ).raise_for_status()
    return general


def login(page: Page, username: str) -> None:
    page.goto("/auth/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(PASSWORDS[username])
    page.locator("form [type=submit]").click()
    page.wait_for_url("**/")


def live(page: Page) -> None:
    expect(page.locator("#rt-status")).to_have_attribute("data-state", "live", timeout=15_000)


def shoot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), animations="disabled")
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: run scripts/browser-deps.sh", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tidings-shots-") as folder:
        server = start_live_server(Path(folder), workers=1)
        try:
            general = stage(server)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
                # Every page at both sizes before the next page: opening a notification's
                # target reads it, so the dashboards are taken while it is still unread.
                people = {}
                for name in ("alice", "admin"):
                    for suffix, options in SCREENS.items():
                        context = browser.new_context(base_url=server.url, locale="en-GB",
                                                      timezone_id="UTC", **options)
                        page = context.new_page()
                        if name == "alice":
                            page.goto("/auth/login")
                            shoot(page, args.out / f"screenshot-login{suffix}.png")
                        login(page, name)
                        people[name, suffix] = page
                pages = [("alice", "/", "dashboard"), ("alice", "/notifications", "notifications"),
                         ("alice", f"/chat/{general}", "chat"),
                         ("admin", "/admin/announcements", "admin-announcements"),
                         ("admin", "/admin/ops", "ops")]
                for name, path, label in pages:
                    for suffix in SCREENS:
                        page = people[name, suffix]
                        page.goto(path)
                        live(page)
                        if label == "ops":
                            page.wait_for_timeout(2500)  # a few live reports for the chart
                        shoot(page, args.out / f"screenshot-{label}{suffix}.png")
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
