"""Production's shape: deploy/nginx.conf, run by a real nginx, in front of a real gunicorn.

The gunicorn behind it has only 4 threads per worker, fewer than the slow clients below: if
nginx handed them through, they would hold every thread and the page would never load.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.support import services
from tests.support.forms import csrf_token_from
from tests.support.live import ROOT, live_login, start_live_server
from tests.support.sockets import Client, publisher

#: A production-like account (demo accounts are refused behind a proxy).
USER = ("reader", "reader-password-1")
#: Threads per gunicorn worker; the slow clients outnumber them.
THREADS = 4
SLOW_CLIENTS = 32


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """nginx -> one gunicorn master (2 workers, Redis), trusting one proxy hop."""
    server = start_live_server(
        tmp_path_factory.mktemp("behind-nginx"), workers=2, threads=THREADS,
        env={"TRUSTED_PROXY_HOPS": "1", "TIDINGS_DEMO_ACCOUNTS": "0",
             "REDIS_URL": services.REDIS_URL,
             "REALTIME_REDIS_CHANNEL": f"tidings-nginx-{uuid.uuid4().hex[:12]}"})
    created = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi:app", "create-user", USER[0],
         "--password", USER[1]], cwd=ROOT, env=server.env, capture_output=True, text=True,
        timeout=60)
    assert created.returncode == 0, created.stderr
    proxy = services.PrivateNginx([f"127.0.0.1:{server.port}"], ROOT / "static")
    try:
        proxy.start()
        yield SimpleNamespace(gunicorn=server, nginx=proxy, url=proxy.url)
    finally:
        proxy.destroy()
        server.stop()


def test_pages_and_logins_work_through_nginx(site):
    assert requests.get(site.url + "/", timeout=10).status_code == 200  # the landing page
    http = live_login(site.url, *USER)
    page = http.get(site.url + "/", timeout=10)
    assert page.status_code == 200 and f'data-username="{USER[0]}"' in page.text
    # Static files come from nginx itself, with a cache lifetime.
    css = requests.get(site.url + "/static/css/site.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "Expires" in css.headers
    # Through the proxy the health check is public: status only.
    assert requests.get(site.url + "/healthz", timeout=10).json() == {"status": "ok"}


def test_a_websocket_subscribes_and_receives_through_nginx(site):
    http = live_login(site.url, *USER)
    client = Client(site, http)  # ws://<nginx>/ws, Origin: the nginx address
    try:
        assert client.subscribe("broadcast")["type"] == "subscribed"
        [event] = publisher(site.gunicorn).broadcast("announcement", {"title": "through nginx"})
        [received] = client.events(1, "broadcast")
        assert received["id"] == event.seq
        assert received["data"]["title"] == "through nginx"
    finally:
        client.close()


def test_slow_clients_do_not_stop_another_users_page(site):
    http = live_login(site.url, *USER)
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            slow = socket.create_connection(("127.0.0.1", site.nginx.port), timeout=10)
            slow.sendall(b"G")  # the first byte of "GET", and then nothing
            held.append(slow)
        # Give gunicorn every chance to be tied up, if nginx were passing them through.
        time.sleep(1)
        for _ in range(3):
            page = http.get(site.url + "/", timeout=30)
            assert page.status_code == 200
            assert f'data-username="{USER[0]}"' in page.text
        # The slow clients are still connected: the page loaded while they were held open.
        for slow in held:
            slow.setblocking(False)
            with pytest.raises(BlockingIOError):
                slow.recv(1)
    finally:
        for slow in held:
            slow.close()


def test_without_nginx_the_same_slow_clients_hold_every_gunicorn_thread(tmp_path):
    """Why nginx is there: the same clients sent straight to gunicorn tie up all its threads.
    (The page is refused a generous moment to load; it would only get one when a slow client
    gives up.) One worker of its own: with two, the kernel may hand every slow client to one
    worker and the page to the other, which then serves it (seen once under load)."""
    gunicorn = start_live_server(tmp_path, workers=1, threads=THREADS)
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            slow = socket.create_connection(("127.0.0.1", gunicorn.port), timeout=10)
            slow.sendall(b"G")
            held.append(slow)
        time.sleep(1)
        with pytest.raises(requests.Timeout):
            requests.get(gunicorn.url + "/auth/login", timeout=5)
        for slow in held:
            slow.close()
        # Once they are gone, gunicorn serves again.
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(gunicorn.url + "/auth/login", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not recover from the slow clients"
    finally:
        for slow in held:
            slow.close()
        gunicorn.stop()


def send_huge_login(port: int, total: int = 5 * 1024 * 1024, sent: int = 64 * 1024) -> tuple[
        int, int]:
    """Announce a ``total``-byte form post to /auth/login, send only its first ``sent`` bytes,
    and return (status, bytes actually sent) once the server answers."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        conn.sendall((f"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      f"Content-Length: {total}\r\nConnection: close\r\n\r\n").encode())
        conn.sendall(b"a" * sent)
        status_line = conn.makefile("rb").readline().decode()
        return int(status_line.split()[1]), sent
    finally:
        conn.close()


@pytest.mark.parametrize("through", ["nginx", "gunicorn"])
def test_a_five_megabyte_post_is_refused_with_413_before_it_is_read(site, through):
    port = site.nginx.port if through == "nginx" else site.gunicorn.port
    status, sent = send_huge_login(port)
    # The answer came while 98.75% of the body was still unsent: nobody read (or spooled) it.
    assert status == 413
    assert sent < 5 * 1024 * 1024 // 50


class _From(HTTPAdapter):
    """Connections from one loopback address: to nginx, another machine (127.0.0.0/8)."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def browser_at(source: str) -> requests.Session:
    http = requests.Session()
    http.mount("http://", _From(source))
    return http


def test_a_burst_of_logins_from_one_address_gets_429_while_another_address_logs_in(site):
    def attempt(_: int) -> int:
        flooder = browser_at("127.0.0.2")
        return flooder.post(site.url + "/auth/login", data={"username": "x", "password": "y"},
                            timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        answers = Counter(pool.map(attempt, range(40)))
    # The burst passes (and the site refuses each for its missing CSRF token); the rest
    # never reaches gunicorn.
    assert answers[429] >= 10, answers
    assert set(answers) <= {400, 429}, answers

    flooder = browser_at("127.0.0.2")
    as_api = flooder.post(site.url + "/auth/login", headers={"Accept": "application/json"},
                          timeout=10)
    assert as_api.status_code == 429
    assert as_api.json()["error"]["code"] == 429
    assert as_api.headers["Retry-After"] == "1"
    as_browser = flooder.post(site.url + "/auth/login", timeout=10, headers={
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert as_browser.status_code == 429
    assert as_browser.headers["Content-Type"].startswith("text/html")
    assert "Too many requests" in as_browser.text

    neighbour = browser_at("127.0.0.3")
    page = neighbour.get(site.url + "/auth/login", timeout=10)
    assert page.status_code == 200
    login = neighbour.post(site.url + "/auth/login", allow_redirects=False, timeout=10, data={
        "csrf_token": csrf_token_from(page.text), "username": USER[0], "password": USER[1]})
    assert login.status_code == 302
