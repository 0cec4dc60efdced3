"""The same protocol under every server flask-sock runs on, with a real client: subscribe, receive
a publish from another process, resume with ``after`` across a reconnect, and what a client sees
when the server is stopped with SIGTERM.

Observed (and asserted below), with the example site of tests/adopter:

=============================  ==========================  =================================
server                         how a socket is served      on SIGTERM the client gets
=============================  ==========================  =================================
gunicorn gthread + the hook    adopted: holds no thread    close 1001 at once; exit status 0
gunicorn gthread, no hook      adopted: holds no thread    no close frame (the TCP connection
                                                           ends when the worker exits: 1006
                                                           in a browser); a warning at the
                                                           first handshake names the hook
gunicorn gthread --certfile    held: the reactor does the  close 1001 at once (with the hook);
                               I/O, the server's thread    exit status 0
                               waits until it ends
``flask run`` (Werkzeug)       held, as above              no close frame: Python's default
                                                           SIGTERM ends the process (status
                                                           -15); clients resume elsewhere
gunicorn -k gevent             refused at start: the worker fails to boot naming
                               ``--worker-class gthread``; the server exits non-zero
=============================  =================================================================
"""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest
import requests
import websocket

from tests.adopter.serve import SiteClient, SiteServer, cli, start_site

#: What a client reads after SIGTERM (None: the connection ended without a close frame), and the
#: server's exit status.
ON_SIGTERM = {
    "gunicorn": (1001, 0),
    "gunicorn without the hook": (None, 0),
    "gunicorn --certfile": (1001, 0),
    "flask run": (None, -signal.SIGTERM),
}

HOOK_WARNING = "gunicorn's worker hook is not installed"
#: What the hook logs once the worker's booted heap is frozen (flask_tidings.gunicorn).
FROZEN = "objects of the booted app frozen out of the garbage collector's full walks"

# The --certfile server's certificate is self-signed, and the client says so on every request.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def send(server: SiteServer, http: requests.Session, to: str, body: str) -> None:
    """A member sends a message through the site's own form (published inside the server)."""
    response = http.post(server.url + "/send", data={"to": to, "body": body},
                         allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:500]


def close_code_on_sigterm(server: SiteServer, tab: SiteClient) -> int | None:
    os.kill(server.process.pid, signal.SIGTERM)
    try:
        code, _reason = tab.close_frame(timeout=30)
        return code
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return None


@pytest.mark.parametrize("kind", list(ON_SIGTERM))
def test_a_client_subscribes_receives_resumes_and_is_told_of_the_shutdown(kind, tmp_path):
    server = start_site(kind, tmp_path)
    tab = None
    try:
        alice, bob = server.login("alice"), server.login("bob")
        tab = SiteClient(server, alice)
        assert tab.subscribe(tab.own_stream)["type"] == "subscribed"

        # A cron job (another process) publishes; the open socket receives it.
        cli(server, "remind", "alice", "Renew your membership")
        [reminder] = tab.events(1, tab.own_stream, timeout=20)
        assert reminder["data"] == {"sender": "reminders", "body": "Renew your membership"}

        # The tab goes away; two messages arrive meanwhile; it resumes after what it saw.
        tab.close()
        send(server, bob, "alice", "Are you there?")
        send(server, bob, "alice", "Call me back")
        tab = SiteClient(server, alice)
        tab.subscribe(tab.own_stream, after=reminder["id"])
        missed = tab.events(2, tab.own_stream, timeout=20)
        assert [e["data"]["body"] for e in missed] == ["Are you there?", "Call me back"]
        assert [e["id"] for e in missed] == [reminder["id"] + 1, reminder["id"] + 2]

        expected_code, expected_status = ON_SIGTERM[kind]
        assert close_code_on_sigterm(server, tab) == expected_code
        assert server.process.wait(timeout=30) == expected_status
        warned = HOOK_WARNING in server.read_log()
        assert warned == (kind == "gunicorn without the hook"), server.read_log()[-2000:]
        frozen = FROZEN in server.read_log()
        assert frozen == (kind in ("gunicorn", "gunicorn --certfile")), server.read_log()[-2000:]
    finally:
        if tab is not None:
            tab.close()
        server.stop()


def test_gevent_workers_are_refused_at_start_with_the_setting_to_change(tmp_path):
    # Only look for it: importing gevent here would put it into this test process.
    if importlib.util.find_spec("gevent") is None:
        pytest.skip("gevent is missing (requirements-dev.txt installs it)")
    server = start_site("gunicorn gevent", tmp_path, wait=False)
    try:
        status = server.process.wait(timeout=60)
    finally:
        server.stop()
    log = server.read_log()
    assert status != 0, log[-2000:]
    assert "flask_tidings needs real threads, and gevent has patched them" in log
    assert "--worker-class gthread" in log
