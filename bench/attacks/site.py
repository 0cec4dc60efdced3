"""The site under attack: gunicorn as ``make run`` starts it, and the shipped nginx in front.

Unlike the test suite's live server (tests/support/live.py), nothing here loosens a limit: the
per-address and per-user socket limits, the login throttles and the room budget are the
defaults a deployment gets. The only differences from ``make run`` are a fresh SQLite file and
a free port, no demo accounts (the site refuses them behind a proxy), and
``TRUSTED_PROXY_HOPS=1`` when nginx is in front (docs/deploy.md), so the site sees each
client's own address.
"""

from __future__ import annotations

import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import generate_password_hash

from bench.servers import Server
from tests.support.live import (
    LIVE_SECRET_KEY,
    ROOT,
    START_TIMEOUT,
    _wait_until_healthy,
    free_port,
    migrate_database,
)
from tests.support.services import (
    NGINX_TEMPLATE,
    PrivateNginx,
    _die_with_parent,
    _wait,
    render_nginx_conf,
)

#: The password of every account made here (victim and attackers).
PASSWORD = "bench-password-1"


@dataclass
class Site:
    """A running gunicorn (and nginx unless ``direct``), its database and its accounts."""

    gunicorn: Server
    nginx: Nginx | None
    directory: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        """Where browsers (victim and attackers) connect: nginx, or gunicorn with --direct."""
        return self.nginx.url if self.nginx else self.gunicorn.url

    @property
    def port(self) -> int:
        return self.nginx.port if self.nginx else self.gunicorn.port

    @property
    def database(self) -> Path:
        return self.directory / "attack.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    def count(self, sql: str, *args: object) -> int:
        """One number from the site's database, read beside the running server."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            return int(db.execute(sql, args).fetchone()[0])

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by gunicorn's worker and by nginx (master and workers)."""
        nginx = [self.nginx.process.pid] if self.nginx and self.nginx.process else []
        return {"worker": cpu_seconds(self.gunicorn.worker_pids()),
                "nginx": cpu_seconds(nginx + [c for p in nginx for c in children(p)])}

    def worker_rss_mb(self) -> float:
        """Resident memory of the (one) worker, from /proc."""
        return self.gunicorn.proc_stats()["rss_kb"] / 1024

    def wait_ready(self) -> None:
        """Until gunicorn answers /healthz (slow on a loaded machine: three times the suite's
        allowance)."""
        try:
            _wait_until_healthy(self.gunicorn, time.monotonic() + START_TIMEOUT * 3)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.nginx:
            self.nginx.destroy()
        self.gunicorn.stop()


#: Clock ticks per second, the unit of /proc/<pid>/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pin(pids: list[int], cpus: set[int]) -> None:
    """Run every thread of these processes and of their children on ``cpus`` (threads they
    start later inherit it from the thread that starts them)."""
    for pid in pids:
        for child in children(pid):
            pin([child], cpus)
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in threads:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # the thread ended meanwhile


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (every thread), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def create_accounts(database: Path, usernames: list[str]) -> None:
    """Insert ordinary accounts with one precomputed password hash (hashing each would take
    seconds on a loaded machine), in the format SQLAlchemy writes for these columns. Not
    bench.users: importing the app there would cost this process seconds it does not need."""
    password_hash = generate_password_hash(PASSWORD)
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
    with sqlite3.connect(database, timeout=30) as db:
        db.executemany(
            "INSERT INTO users (username, password_hash, role, active, session_version, "
            "created_at) VALUES (?, ?, 'user', 1, 0, ?)",
            [(name, password_hash, now) for name in usernames])


def site_env(directory: Path, behind_proxy: bool) -> dict[str, str]:
    """The environment ``make run`` would give gunicorn, on a private database."""
    env = {name: value for name, value in os.environ.items()
           # Limits come from their defaults, whatever this shell has exported.
           if not name.startswith(("REALTIME_", "TIDINGS_", "LOGIN_", "CHAT_"))}
    env.update({
        "TIDINGS_ENV": "development",
        "SECRET_KEY": LIVE_SECRET_KEY,
        "DATABASE_URL": f"sqlite:///{directory / 'attack.db'}",
        "TIDINGS_WORKERS": "1",
        "TIDINGS_DEMO_ACCOUNTS": "0",
        "TRUSTED_PROXY_HOPS": "1" if behind_proxy else "0",
        "PYTHONUNBUFFERED": "1",
        "FLASK_APP": "wsgi:app",
    })
    return env


class Nginx(PrivateNginx):
    """tests/support/services.py's private nginx, from another template if asked (to try a
    candidate config against the same attacks before it replaces deploy/nginx.conf)."""

    def __init__(self, upstreams: list[str], template: Path = NGINX_TEMPLATE) -> None:
        super().__init__(upstreams, ROOT / "static")
        self.template = template

    def start(self) -> None:
        if self.template == NGINX_TEMPLATE:
            super().start()
            return
        self.port = free_port()
        config = self.root / "nginx.conf"
        config.write_text(render_nginx_conf({
            "USER": "root" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name,
            "LISTEN": f"127.0.0.1:{self.port}",
            "SERVER_NAME": "127.0.0.1 localhost",
            "UPSTREAM_SERVERS": "\n        ".join(f"server {u};" for u in self.upstreams),
            "STATIC_ROOT": str(self.static_root),
        }, self.template))
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.root), "-c", str(config), "-e", str(self.error_log),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root,
            preexec_fn=_die_with_parent(signal.SIGTERM))
        _wait(self._accepts, self.process, "nginx", self.error_log)


def start_site(directory: Path, direct: bool, accounts: int,
               nginx_template: Path = NGINX_TEMPLATE) -> Site:
    """Migrate, create the victim and ``accounts`` attackers (``victim00000``,
    ``mallory00000`` ...; one password, ``PASSWORD``), start gunicorn and (unless ``direct``)
    nginx. Returns at once: :meth:`Site.wait_ready` waits for gunicorn to answer, so the
    victim's processes can start meanwhile."""
    directory.mkdir(parents=True, exist_ok=True)
    env = site_env(directory, behind_proxy=not direct)
    migrate_database(env)
    create_accounts(directory / "attack.db", ["victim00000"]
                    + [f"mallory{n:05d}" for n in range(accounts)])
    port = free_port()
    run_env = {**env, "TIDINGS_BIND": f"127.0.0.1:{port}"}
    log = directory / "gunicorn.log"
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=run_env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
    gunicorn = Server(url=f"http://127.0.0.1:{port}", port=port, pid=process.pid, workers=1,
                      log=log, env=run_env, process=process)
    nginx = None
    try:
        if not direct:
            # nginx starts without its upstream; it answers 502 until gunicorn is up.
            nginx = Nginx([f"127.0.0.1:{port}"], nginx_template)
            nginx.start()
    except BaseException:
        gunicorn.stop()
        raise
    return Site(gunicorn=gunicorn, nginx=nginx, directory=directory, env=run_env)
