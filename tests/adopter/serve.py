"""Run the example site (site.py) under a real server for end-to-end tests.

Each server gets its own folder, database and log; the site is prepared the way its README would
say (``flask init-db``, two members), then started with one of the commands in :data:`SERVERS`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket

from tests.support.live import ROOT, free_port
from tests.support.sockets import Client, cookie_header

#: Members of the example site (data.sql): username -> password.
MEMBERS = {"alice": "alice-pass", "bob": "bob-pass"}

HERE = Path(__file__).parent
APP = "tests.adopter.site:app"
GUNICORN_CONF = str(HERE / "gunicorn.conf.py")

#: How each server is started (``{port}``, ``{cert}`` ... are filled in). gunicorn's control socket
#: is per user by default, so parallel test servers would fight over it; without ``-c`` gunicorn
#: would read the Tidings site's own ./gunicorn.conf.py, hence an empty one (``{plain_conf}``).
SERVERS: dict[str, list[str]] = {
    "flask run": ["-m", "flask", "--app", APP, "run", "--port", "{port}", "--no-reload"],
    "gunicorn": ["-m", "gunicorn", "-c", GUNICORN_CONF, "--no-control-socket",
                 "-b", "127.0.0.1:{port}", "-w", "{workers}"],
    "gunicorn without the hook": ["-m", "gunicorn", "-c", "{plain_conf}", "-k", "gthread",
                                  "--threads", "8", "--no-control-socket",
                                  "-b", "127.0.0.1:{port}", "-w", "{workers}"],
    "gunicorn --certfile": ["-m", "gunicorn", "-c", GUNICORN_CONF, "--no-control-socket",
                            "-b", "127.0.0.1:{port}", "-w", "{workers}",
                            "--certfile", "{cert}", "--keyfile", "{key}"],
    "gunicorn gevent": ["-m", "gunicorn", "-c", "{plain_conf}", "-k", "gevent",
                        "--no-control-socket",
                        "-b", "127.0.0.1:{port}", "-w", "{workers}"],
}

@dataclass
class SiteServer:
    """One running server of the example site."""

    kind: str
    url: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen = field(repr=False)

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def is_running(self) -> bool:
        return self.process.poll() is None

    def login(self, username: str) -> requests.Session:
        """Log in through the site's own form; the session holds its cookie."""
        http = requests.Session()
        # The --certfile server's certificate is self-signed; REQUESTS_CA_BUNDLE in the
        # environment would override ``verify`` on every request unless the environment is off.
        http.trust_env = False
        http.verify = False
        response = http.post(self.url + "/login", allow_redirects=False, timeout=10,
                             data={"username": username, "password": MEMBERS[username]})
        assert response.status_code == 302, (response.status_code, response.text[:500])
        return http

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM the server (a deploy, ``systemctl stop``) and return its exit status."""
        if self.is_running():
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.is_running():
            self.terminate()


def site_env(directory: Path, **extra: str) -> dict[str, str]:
    """The example site's environment (it reads ``FLASK_*`` with ``from_prefixed_env``)."""
    env = {
        **os.environ,
        "FLASK_DATABASE": str(directory / "site.sqlite"),
        "FLASK_SECRET_KEY": "adopter-test-secret",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        # Python warns about the self-signed certificate on every request otherwise.
        "PYTHONWARNINGS": "ignore:Unverified HTTPS request",
    }
    env.update(extra)
    return env


def prepare_site(directory: Path, env: dict[str, str]) -> None:
    """The site's own ``flask init-db``, then the members of data.sql."""
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "flask", "--app", APP, "init-db"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(env["FLASK_DATABASE"]) as db:
        db.executescript((HERE / "data.sql").read_text())


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with ``openssl req`` (no CA: clients skip verification)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def start_site(
    kind: str, directory: Path, workers: int = 1, env: dict[str, str] | None = None,
    wait: bool = True, timeout: float = 30.0,
) -> SiteServer:
    """Prepare the site in ``directory`` and start it with ``SERVERS[kind]``.

    :param wait: wait until the login page answers (False for a server expected to refuse).
    """
    env = env or site_env(directory)
    if not (directory / "site.sqlite").exists():
        prepare_site(directory, env)
    cert = key = Path("-")
    if "certfile" in kind:
        cert, key = self_signed_certificate(directory)
    plain_conf = directory / "plain.conf.py"
    plain_conf.write_text("# gunicorn's defaults and the command line only: no hook.\n")
    port = free_port()
    argv = [a.format(port=port, workers=workers, cert=cert, key=key, plain_conf=plain_conf)
            for a in SERVERS[kind]]
    if argv[1] == "gunicorn":
        argv.append(APP)
    log = directory / f"server-{port}.log"
    scheme = "https" if "certfile" in kind else "http"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = SiteServer(kind, f"{scheme}://127.0.0.1:{port}", port, env, log, process)
    if wait:
        _wait_until_up(server, time.monotonic() + timeout)
    return server


def _wait_until_up(server: SiteServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not server.is_running():
            raise RuntimeError(f"{server.kind} exited with {server.process.returncode}:\n"
                               f"{server.read_log()}")
        try:
            if requests.get(server.url + "/login", timeout=1, verify=False).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.kind} did not answer in time:\n{server.read_log()}")


def cli(server: SiteServer, *args: str) -> str:
    """Run one of the site's ``flask`` commands as cron would: another process, same database."""
    result = subprocess.run([sys.executable, "-m", "flask", "--app", APP, *args], cwd=ROOT,
                            env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"flask {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


class SiteClient(Client):
    """The suite's WebSocket client (tests/support/sockets.py), for ws:// and wss:// alike."""

    def __init__(self, server: SiteServer, http: requests.Session, timeout: float = 10.0):
        self.ws = websocket.create_connection(
            server.url.replace("http", "ws", 1) + "/ws",
            cookie=cookie_header(http),
            origin=server.url,
            timeout=timeout,
            sslopt={"cert_reqs": ssl.CERT_NONE},
        )
        self.welcome = self.expect("welcome")
        self.own_stream = f"user:{self.welcome['user']}"
