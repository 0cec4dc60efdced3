"""A worker remembers who a login session is for a few seconds (identities.py), so a reload, a
second tab or a reconnect skips the user load; a logout anywhere ends that at once.

In process: handshakes run through the real site (Flask-Login, its user loader and session
versions) on one end of a socket pair; "another worker's logout" is its session-version bump in
the database plus the disconnect the broker delivers here, as test_revocation.py does it.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from app.extensions import db, login_manager, realtime
from app.models import User, load_user, session_user
from flask_tidings.connection import Identity
from flask_tidings.extension import as_identity
from flask_tidings.identities import IdentityCache
from tests.realtime.test_revocation import handshake_environ, parse

ALICE = Identity("1", "alice")


def handshake(app, cookie: str) -> str:
    """Open a socket with ``cookie``: "welcome", "closed <code>" or the refusal's HTTP status.

    The server's thread stays with a socket pair's connection until it ends (adoption.py), so
    the request runs in a thread of its own and ends when this client hangs up."""
    server_end, client_end = socket.socketpair()
    status: list[str] = []
    request = threading.Thread(target=app, args=(
        handshake_environ(cookie, server_end), lambda s, headers: status.append(s)))
    request.start()
    try:
        client_end.settimeout(0.05)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            head, _, rest = data.partition(b"\r\n\r\n")
            for opcode, payload in parse(rest):
                if opcode == 0x8:
                    return f"closed {int.from_bytes(payload[:2], 'big')}"
                if b'"welcome"' in payload:
                    return "welcome"
            if not data and not request.is_alive():  # refused: an HTTP answer, no upgrade
                return status[0].split()[0]
            try:
                data += client_end.recv(65536)
            except TimeoutError:
                pass
        raise AssertionError(f"no answer to the handshake: {data!r} {status}")
    finally:
        client_end.close()
        request.join(10)
        assert not request.is_alive()


@pytest.fixture(params=["session loader", "flask-login"])
def site(request, app, client, auth, monkeypatch):
    """Alice logged in; ``loads`` counts the site's user loads (the database queries).

    Run twice: with the site's light session loader (what handshakes use), and without it
    (Flask-Login's user loader, what a site without one gets)."""
    auth.login()
    state = app.extensions["realtime"]
    state.ensure_started()
    loads: list[str] = []
    if request.param == "session loader":
        owner, name = realtime, "_session_loader"
    else:
        monkeypatch.setattr(realtime, "_session_loader", None)
        owner, name = login_manager, "_user_callback"
    original = getattr(owner, name)

    def counted(user_id):
        loads.append(user_id)
        return original(user_id)

    monkeypatch.setattr(owner, name, counted)
    return state, client.get_cookie("session").value, loads


def during_the_load(monkeypatch, then) -> None:
    """Run ``then()`` inside the next user load, after it read the database."""
    for owner, name in ((realtime, "_session_loader"), (login_manager, "_user_callback")):
        original = getattr(owner, name)
        if original is None:
            continue

        def load(user_id, original=original):
            user = original(user_id)
            then()
            return user

        monkeypatch.setattr(owner, name, load)


def end_alices_sessions_elsewhere(app, state) -> None:
    """Another worker's logout: the version bump is committed, then its disconnect arrives."""
    with app.app_context():
        alice = db.session.get(User, 1)
        alice.end_sessions()
        db.session.commit()
    state._deliver([{"k": "control", "op": "disconnect_user", "user": "1", "code": 4001,
                     "reason": "signed out"}])


def test_a_second_handshake_of_the_same_session_loads_no_user(app, site):
    state, cookie, loads = site
    assert handshake(app, cookie) == "welcome"
    assert handshake(app, cookie) == "welcome"
    assert len(loads) == 1


def test_a_session_ended_in_another_worker_cannot_open_a_socket_here_afterwards(app, site):
    state, cookie, loads = site
    assert handshake(app, cookie) == "welcome"  # remembered now
    end_alices_sessions_elsewhere(app, state)
    assert handshake(app, cookie) == "401"


def test_a_load_running_when_the_logout_arrives_is_not_remembered(app, site, monkeypatch):
    state, cookie, loads = site
    with monkeypatch.context() as patch:
        during_the_load(patch, lambda: end_alices_sessions_elsewhere(app, state))
        assert handshake(app, cookie) == "closed 4001"  # the hub remembers the disconnect
    assert handshake(app, cookie) == "401"


def test_while_the_broker_cannot_tell_of_logouts_every_handshake_loads_the_user(
        app, site, monkeypatch):
    state, cookie, loads = site
    monkeypatch.setattr(type(state.broker), "connected", property(lambda self: False))
    assert handshake(app, cookie) == "welcome"
    assert handshake(app, cookie) == "welcome"
    assert len(loads) == 2


def test_a_broker_that_lost_messages_makes_the_worker_forget_every_session(app, site):
    state, cookie, loads = site
    assert handshake(app, cookie) == "welcome"
    state._resync()  # what a broker calls after a reconnect
    assert handshake(app, cookie) == "welcome"
    assert len(loads) == 2


# ---------------------------------------------------------------------- the cache alone


def test_an_identity_is_remembered_until_its_time_is_up():
    cache = IdentityCache(ttl=30)
    cache.put("1.0", ALICE, now=100.0, generation=cache.generation)
    assert cache.get("1.0", now=129.0) == ALICE
    assert cache.get("1.0", now=130.0) is None
    assert cache.get("2.0", now=100.0) is None


def test_forgetting_a_user_forgets_all_their_sessions_and_no_one_elses():
    cache = IdentityCache(ttl=30)
    bob = Identity("2", "bob")
    for key, who in (("1.0", ALICE), ("1.1", ALICE), ("2.0", bob)):
        cache.put(key, who, now=0.0, generation=cache.generation)
    cache.forget_user("1")
    assert cache.get("1.0", 1.0) is None and cache.get("1.1", 1.0) is None
    assert cache.get("2.0", 1.0) == bob


def test_a_load_begun_before_a_forget_is_not_remembered():
    cache = IdentityCache(ttl=30)
    began = cache.generation
    cache.forget_user("9")  # anyone's: which user's session a load finds is not known before
    cache.put("1.0", ALICE, now=0.0, generation=began)
    assert cache.get("1.0", 1.0) is None


def test_the_cache_holds_at_most_its_size_oldest_out_first():
    cache = IdentityCache(ttl=30, size=2)
    for n in range(3):
        cache.put(f"{n}.0", Identity(str(n)), now=0.0, generation=cache.generation)
    assert len(cache) == 2
    assert cache.get("0.0", 1.0) is None and cache.get("2.0", 1.0) is not None


def test_a_ttl_of_zero_remembers_nothing():
    cache = IdentityCache(ttl=0)
    cache.put("1.0", ALICE, now=0.0, generation=cache.generation)
    assert cache.get("1.0", 0.0) is None


# ---------------------------------------------------------------------- the site's session loader


@pytest.mark.parametrize("case", ["valid", "ended", "deactivated", "admin", "unknown user",
                                  "no version", "not numbers"])
def test_the_light_session_loader_answers_as_the_user_loader_does(app, case):
    with app.app_context():
        alice = db.session.get(User, 1)
        key = alice.get_id()
        if case == "ended":
            alice.end_sessions()
        elif case == "deactivated":
            alice.active = False
        elif case == "admin":
            key = db.session.get(User, 2).get_id()
        elif case == "unknown user":
            key = "999.0"
        elif case == "no version":
            key = "1"
        elif case == "not numbers":
            key = "alice.0"
        db.session.commit()
        expected = as_identity(load_user(key))
        db.session.remove()
        assert as_identity(session_user(key)) == expected
    if case in ("valid", "admin"):
        assert expected is not None and expected.roles  # compared with something, not None


def test_a_session_the_light_loader_does_not_vouch_for_is_left_to_flask_login(
        app, client, auth, monkeypatch):
    auth.login()
    app.extensions["realtime"].ensure_started()
    loads: list[str] = []
    original = login_manager._user_callback
    monkeypatch.setattr(realtime, "_session_loader", lambda key: None)
    monkeypatch.setattr(login_manager, "_user_callback",
                        lambda key: loads.append(key) or original(key))
    assert handshake(app, client.get_cookie("session").value) == "welcome"
    assert loads == ["1.0"]
