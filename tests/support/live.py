"""Run the real gunicorn (gthread worker, gunicorn.conf.py) on a free port for end-to-end tests.

Use through the ``live_server`` fixture::

    # services: tests/support/services.py, the session's private Redis and PostgreSQL
    server = live_server(workers=2, env={"REDIS_URL": services.REDIS_URL})
    http = live_login(server, "alice", "alice-demo-pass")   # a logged-in requests.Session
    http.get(server.url + "/")

The server runs in development mode, so the demo accounts (alice, bob, admin; see
``app.cli.DEMO_ACCOUNTS``) exist, on a fresh SQLite database prepared by ``flask db upgrade``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.forms import csrf_token_from

#: The repository root, where gunicorn.conf.py and wsgi.py live.
ROOT = Path(__file__).resolve().parents[2]

#: Fixed so sessions are valid in every worker and across restarts within a test.
LIVE_SECRET_KEY = "live-server-test-secret"

#: Seconds to wait for /healthz after start, and for a graceful stop before SIGKILL.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A running gunicorn arbiter and its workers."""

    url: str
    port: int
    pid: int
    workers: int
    log: Path
    env: dict[str, str]
    process: subprocess.Popen = field(repr=False)

    def worker_pids(self) -> list[int]:
        """PIDs of the arbiter's current children (its workers), read from /proc."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the arbiter (graceful), then SIGKILL it and its workers if it lingers."""
        if not self.is_running():
            return
        workers = self.worker_pids()
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [self.pid, *workers]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=5)


def migrate_database(env: dict[str, str]) -> None:
    """Create the schema with the checked-in migrations, exactly as ``make run`` does."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi:app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{result.stdout}\n{result.stderr}")


def _wait_until_healthy(server: LiveServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not server.is_running():
            raise RuntimeError(
                f"gunicorn exited with {server.process.returncode}:\n{server.read_log()}")
        try:
            response = requests.get(server.url + "/healthz", timeout=1)
            if response.ok and len(server.worker_pids()) >= server.workers:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"gunicorn did not become healthy in {START_TIMEOUT}s:\n{server.read_log()}")


def start_live_server(
    directory: Path,
    workers: int = 1,
    threads: int | None = None,
    env: dict[str, str] | None = None,
    app: str = "wsgi:app",
) -> LiveServer:
    """Start gunicorn with ``gunicorn.conf.py`` on a free port and wait until ``/healthz`` answers.

    :param directory: a private folder for the database and the log file.
    :param workers: gunicorn worker processes (``TIDINGS_WORKERS``).
    :param threads: threads per worker (``TIDINGS_THREADS``); gunicorn.conf.py's default if None.
    :param env: extra environment, e.g. ``{"REDIS_URL": ...}``; may override ``DATABASE_URL``.
    :param app: the WSGI app gunicorn serves (a test may serve the site plus a route of its own).
    """
    directory.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        "TIDINGS_ENV": "development",
        "SECRET_KEY": LIVE_SECRET_KEY,
        "DATABASE_URL": f"sqlite:///{directory / 'live.db'}",
        "TIDINGS_WORKERS": str(workers),
        "PYTHONUNBUFFERED": "1",
        # Tests open many sockets per account, all from 127.0.0.1, in a minute; each of these
        # limits has its own test.
        "REALTIME_HANDSHAKES_PER_MINUTE": "100000",
        "REALTIME_HANDSHAKES_PER_MINUTE_PER_ADDRESS": "100000",
        "REALTIME_MAX_SOCKETS_PER_ADDRESS": "100000",
    }
    base_env.pop("TIDINGS_CONTROL_SOCKET", None)
    if threads is not None:
        base_env["TIDINGS_THREADS"] = str(threads)
    base_env.update(env or {})
    migrate_database(base_env)

    # A port found free may be taken before gunicorn binds it; try a few.
    last_error: Exception | None = None
    for attempt in range(3):
        port = free_port()
        run_env = {**base_env, "TIDINGS_BIND": f"127.0.0.1:{port}"}
        log = directory / f"gunicorn-{port}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app],
                cwd=ROOT,
                env=run_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not hit gunicorn directly
            )
        server = LiveServer(
            url=f"http://127.0.0.1:{port}",
            port=port,
            pid=process.pid,
            workers=workers,
            log=log,
            env=run_env,
            process=process,
        )
        try:
            _wait_until_healthy(server, time.monotonic() + START_TIMEOUT)
            return server
        except RuntimeError as exc:
            last_error = exc
            if "Address already in use" not in server.read_log() or attempt == 2:
                raise
    raise RuntimeError("could not start gunicorn") from last_error


def live_login(
    server: LiveServer | str, username: str, password: str, remember: bool = False
) -> requests.Session:
    """Log in over real HTTP as a browser would and return the session holding the cookies.

    :param server: a :class:`LiveServer` or a base URL.
    :raises AssertionError: if the login did not land on the dashboard.
    """
    base = server.url if isinstance(server, LiveServer) else server.rstrip("/")
    http = requests.Session()
    page = http.get(base + "/auth/login", timeout=10)
    page.raise_for_status()
    form = {"csrf_token": csrf_token_from(page.text), "username": username, "password": password}
    if remember:
        form["remember"] = "y"
    response = http.post(base + "/auth/login", data=form, timeout=10, allow_redirects=False)
    if response.status_code != 302:
        raise AssertionError(
            f"login as {username!r} failed with {response.status_code}:\n{response.text[:1000]}"
        )
    return http
