"""A typical existing site (its own session login, sqlite3, no Flask-Login, no SQLAlchemy) gains
live notifications from flask_tidings in at most ten added lines. The same site end to end in
Chromium: tests/browser/test_adopter_site.py (it shares that folder's one browser)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from flask_tidings import Identity
from flask_tidings.extension import as_identity
from tests.adopter.serve import MEMBERS

HERE = Path(__file__).parent

#: Every file of the site that adopting flask_tidings touched.
ADOPTER_FILES = [
    HERE / "site.py",
    HERE / "templates" / "base.html",
    HERE / "templates" / "index.html",
    HERE / "gunicorn.conf.py",
]

#: Anything that belongs to the realtime layer, on a line of the site.
REALTIME_WORDS = re.compile(r"tidings|realtime", re.IGNORECASE)
#: How an added line is marked: ``# + tidings`` in Python, ``{# + tidings #}`` in templates.
MARK = re.compile(r"(#|\{#) \+ tidings")


def code_lines(path: Path) -> list[str]:
    """The file's lines, less a Python module's docstring (which tells the story, not code)."""
    lines = path.read_text().splitlines()
    if path.suffix == ".py":
        first = ast.parse(path.read_text()).body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            del lines[first.lineno - 1 : first.end_lineno]
    return lines


def test_adopting_took_at_most_ten_lines_and_every_realtime_line_is_counted():
    added = [f"{p.name}: {line.strip()}" for p in ADOPTER_FILES for line in code_lines(p)
             if MARK.search(line)]
    assert 1 <= len(added) <= 10, "\n".join(added)
    unmarked = [f"{p.name}: {line.strip()}" for p in ADOPTER_FILES for line in code_lines(p)
                if REALTIME_WORDS.search(line) and not MARK.search(line)]
    assert unmarked == [], "lines about the realtime layer that the count missed"


# ------------------------------------------------------------------ in process, no server


@pytest.fixture
def site_module(tmp_path, monkeypatch):
    """A fresh copy of the site on its own database, as its ``init-db`` leaves it."""
    database = tmp_path / "site.sqlite"
    monkeypatch.setenv("FLASK_DATABASE", str(database))
    spec = importlib.util.spec_from_file_location(f"adopter_site_{id(tmp_path)}",
                                                  HERE / "site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flask finds the site's templates from its module
    spec.loader.exec_module(module)
    result = module.app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(database) as db:
        db.executescript((HERE / "data.sql").read_text())
    yield module
    sys.modules.pop(spec.name, None)


def login(client, username: str):
    response = client.post("/login", data={"username": username, "password": MEMBERS[username]})
    assert response.status_code == 302


def test_a_members_page_carries_the_socket_settings_and_a_visitors_page_does_not(site_module):
    client = site_module.app.test_client()
    assert b"data-realtime-url" not in client.get("/login").data
    login(client, "alice")
    page = client.get("/").get_data(as_text=True)
    assert 'data-realtime-url="/ws"' in page
    assert '<script src="/ws/static/realtime.js">' in page
    assert client.get("/ws/static/realtime.js").status_code == 200


def test_a_sent_message_is_stored_on_the_recipients_stream(site_module):
    client = site_module.app.test_client()
    login(client, "bob")
    assert client.post("/send", data={"to": "alice", "body": "lunch?"}).status_code == 302
    with site_module.app.app_context():
        db = site_module.get_db()
        alice = db.execute("SELECT id FROM user WHERE username = 'alice'").fetchone()
        assert site_module.realtime.head(f"user:{alice['id']}") == 1


def test_the_sites_own_user_row_is_its_identity_and_nothing_else_of_it_is_kept(tmp_path):
    db = sqlite3.connect(tmp_path / "rows.db")
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT 7 AS id, 'alice' AS username, 'pbkdf2:secret' AS password").fetchone()
    assert as_identity(row) == Identity("7", "alice", frozenset())
    with pytest.raises(TypeError, match="without an 'id' column"):
        as_identity(db.execute("SELECT 'alice' AS username").fetchone())


def test_realtime_settings_come_from_the_sites_own_config_and_its_environment_convention(
        tmp_path, monkeypatch):
    # The site reads FLASK_* variables (app.config.from_prefixed_env), so that is where a
    # deployment sets REALTIME_* settings: the package itself reads no environment.
    monkeypatch.setenv("FLASK_REALTIME_HEARTBEAT", "5")
    monkeypatch.setenv("REALTIME_HEARTBEAT", "7")  # another site's convention: not read here
    monkeypatch.setenv("FLASK_DATABASE", str(tmp_path / "site.sqlite"))
    spec = importlib.util.spec_from_file_location(f"adopter_env_{id(tmp_path)}", HERE / "site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert module.app.extensions["realtime"].limits.heartbeat == 5.0
    finally:
        sys.modules.pop(spec.name, None)
