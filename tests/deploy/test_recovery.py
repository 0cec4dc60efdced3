"""Database faults a worker survives without a restart, and the page users see meanwhile."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from tests.support import services
from tests.support.forms import csrf_token_from
from tests.support.live import LiveServer, live_login, start_live_server

#: gunicorn's own page, which users saw when the site's error page needed the database too.
GUNICORN_BARE_PAGE = "<h1><p>Internal Server Error</p></h1>"


class ReadOnlyFile:
    """Makes a file read-only for this process too. Root ignores permission bits, so as root
    the file is made immutable (chattr +i) instead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.locked = False
        self.as_root = os.geteuid() == 0
        if self.as_root and not shutil.which("chattr"):
            reason = "making a file read-only as root needs chattr (e2fsprogs)"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)

    def lock(self) -> None:
        if self.as_root:
            result = subprocess.run(["chattr", "+i", str(self.path)], capture_output=True,
                                    text=True)
            if result.returncode != 0:
                pytest.skip(f"this filesystem cannot make files immutable: {result.stderr}")
        else:
            self.path.chmod(0o444)
        self.locked = True

    def unlock(self) -> None:
        if not self.locked:
            return
        if self.as_root:
            subprocess.run(["chattr", "-i", str(self.path)], check=True)
        else:
            self.path.chmod(0o644)
        self.locked = False


def logs_in_and_writes(server: LiveServer) -> bool:
    """Log in (a write: counters, last login) and mark everything read (a write and a publish)."""
    try:
        http = live_login(server, "alice", "alice-demo-pass")
        token = csrf_token_from(http.get(server.url + "/", timeout=10).text)
        response = http.post(server.url + "/notifications/read-all", data={"csrf_token": token},
                             timeout=10, allow_redirects=False)
        return response.status_code == 302
    except (AssertionError, requests.RequestException):
        return False


def test_a_worker_started_on_a_read_only_database_recovers_once_it_is_writable(tmp_path):
    start_live_server(tmp_path).stop()  # a migrated database with the demo accounts
    database = ReadOnlyFile(tmp_path / "live.db")
    database.lock()
    try:
        server = start_live_server(tmp_path, workers=1)
        try:
            # Reading works, so the worker looks healthy; writing cannot.
            assert requests.get(server.url + "/healthz", timeout=10).json()["database"] == "ok"
            assert not logs_in_and_writes(server)
            database.unlock()
            # The first write on a connection opened read-only fails once and discards the
            # worker's stale connections; from then on every login and write works.
            deadline = time.monotonic() + 30
            while not logs_in_and_writes(server):
                assert time.monotonic() < deadline, (
                    "still failing after the file became writable:\n" + server.read_log()[-3000:])
                time.sleep(0.5)
            assert all(logs_in_and_writes(server) for _ in range(5))
        finally:
            server.stop()
    finally:
        database.unlock()


@pytest.fixture
def postgres_site(tmp_path):
    """A live server on a PostgreSQL database of its own, which the test can take away."""
    name = f"tidings_outage_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(services.POSTGRES_ADMIN_DSN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    server = start_live_server(tmp_path, workers=1,
                               env={"DATABASE_URL": services.postgres_url(name)})

    def outage(on: bool) -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if on else "true"}')
        if on:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (name,))

    yield server, outage
    server.stop()
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def test_a_database_outage_shows_the_sites_error_page_and_the_site_comes_back(postgres_site):
    server, outage = postgres_site
    alice = live_login(server, "alice", "alice-demo-pass")
    assert alice.get(server.url + "/", timeout=10).status_code == 200

    outage(True)
    response = alice.get(server.url + "/", timeout=30)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert GUNICORN_BARE_PAGE not in response.text
    assert 'class="site-header"' in response.text and "briefly unavailable" in response.text
    # Visitors still get the landing page and the login form: neither needs the database.
    assert requests.get(server.url + "/", timeout=10).status_code == 200
    assert requests.get(server.url + "/auth/login", timeout=10).status_code == 200

    outage(False)
    deadline = time.monotonic() + 30
    while alice.get(server.url + "/", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the site did not come back with its database"
        time.sleep(0.5)
