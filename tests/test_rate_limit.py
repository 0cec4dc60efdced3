"""User stories about password guessing being slowed down without locking the real user out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app import create_app
from app.auth import throttle
from app.config import TestConfig
from app.extensions import db
from app.models import LoginThrottle, User, utcnow
from tests.support.forms import csrf_token_from
from tests.test_models import postgres_schema_url

ATTACKER, HOME, OFFICE = "203.0.113.66", "198.51.100.10", "198.51.100.20"


def visitor(app, address: str):
    """A test client whose requests come from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def attempt(client, username: str, password: str, headers: dict | None = None):
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    return client.post("/auth/login", headers=headers or {},
                       data={"csrf_token": token, "username": username, "password": password})


def counters(app) -> dict[str, int]:
    with app.app_context():
        return {row.key: row.failures for row in db.session.scalars(select(LoginThrottle))}


def age_counters(app, seconds: float) -> None:
    """Move every counter's last failure back in time, as if we had waited."""
    with app.app_context():
        for row in db.session.scalars(select(LoginThrottle)):
            row.last_failure_at = throttle._aware(row.last_failure_at) - timedelta(seconds=seconds)
        db.session.commit()


def test_five_failures_pause_that_address_for_that_account_with_a_warning_first(app):
    guesser = visitor(app, ATTACKER)
    pages = [attempt(guesser, "alice", "wrong-password") for _ in range(5)]
    assert {page.status_code for page in pages} == {200}
    assert [b"attempt" in page.data and b"left" in page.data for page in pages] == [
        False, False, True, True, True]
    assert b"2 attempts left before logins from your address are paused" in pages[2].data
    assert b"1 attempt left" in pages[3].data
    assert b"No attempts left" in pages[4].data

    # Even the right password is refused from there now ...
    response = attempt(guesser, "alice", "alice-password-1")
    assert response.status_code == 429
    assert b"Too many failed logins for this account from your address." in response.data
    assert b"Try again in 15 minutes." in response.data
    assert int(response.headers["Retry-After"]) > 14 * 60
    # ... while alice, at home, logs in as usual, and so does anyone else from there.
    assert attempt(visitor(app, HOME), "alice", "alice-password-1").status_code == 302
    assert attempt(visitor(app, ATTACKER), "boss", "boss-password-1").status_code == 302


def test_guessing_from_many_addresses_slows_the_account_down_but_never_locks_it(app):
    known = visitor(app, HOME)  # alice's own browser, which has logged in before
    assert attempt(known, "alice", "alice-password-1").status_code == 302
    known.post("/auth/logout", data={"csrf_token": csrf_token_from(
        known.get("/").get_data(as_text=True))})

    for n in range(10):  # a botnet: one guess per address
        assert attempt(visitor(app, f"192.0.2.{n}"), "alice", "wrong").status_code == 200
    # From now on each attempt waits 1, 2, 4 ... seconds after the last failure.
    slowed = attempt(visitor(app, "192.0.2.100"), "alice", "wrong")
    assert slowed.status_code == 429
    assert b"attempts are slowed down. Try again in 1 second." in slowed.data
    assert slowed.headers["Retry-After"] == "1"
    waits = []
    for n in range(3):
        age_counters(app, 60)  # the wait has passed (still inside the window)
        assert attempt(visitor(app, f"192.0.2.{20 + n}"), "alice", "wrong").status_code == 200
        waits.append(int(attempt(visitor(app, "192.0.2.99"), "alice", "wrong")
                         .headers["Retry-After"]))
    assert waits == [2, 4, 8]

    # alice's own browser is not slowed at all; from a new place she waits seconds, not hours.
    assert attempt(known, "alice", "alice-password-1").status_code == 302
    assert counters(app).get("account:alice") is None  # her login cleared the slowdown
    assert attempt(visitor(app, OFFICE), "alice", "alice-password-1").status_code == 302


def test_one_address_guessing_many_accounts_is_paused(app):
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 3
    guesser = visitor(app, ATTACKER)
    for name in ("x1", "x2", "x3"):
        attempt(guesser, name, "whatever-password")
    response = attempt(guesser, "alice", "alice-password-1")
    assert response.status_code == 429
    assert b"Too many login attempts" in response.data
    assert attempt(visitor(app, HOME), "alice", "alice-password-1").status_code == 302


def test_the_pause_lifts_when_the_window_passes(app):
    guesser = visitor(app, ATTACKER)
    for _ in range(5):
        attempt(guesser, "alice", "wrong-password")
    assert attempt(guesser, "alice", "alice-password-1").status_code == 429
    age_counters(app, 16 * 60)
    assert attempt(guesser, "alice", "alice-password-1").status_code == 302


def test_a_successful_login_forgets_the_accounts_failures_but_not_the_addresss(app):
    client = visitor(app, HOME)
    for _ in range(4):
        attempt(client, "alice", "wrong-password")
    assert attempt(client, "alice", "alice-password-1").status_code == 302
    assert counters(app) == {f"address:{HOME}": 4}


def test_expired_counters_are_pruned(app):
    old = utcnow() - timedelta(hours=2)
    with app.app_context():
        db.session.add_all([LoginThrottle(key=f"address:10.0.0.{n}", failures=3,
                                          last_failure_at=old) for n in range(10)])
        db.session.commit()
    throttle._last_prune = 0.0  # as if the last prune were long ago
    attempt(visitor(app, HOME), "alice", "wrong-password")
    assert set(counters(app)) == {f"pair:alice|{HOME}", f"address:{HOME}", "account:alice"}


def test_one_address_may_register_only_a_few_accounts_per_hour(app):
    app.config["REGISTRATIONS_PER_ADDRESS"] = 2

    def register(client, name):
        token = csrf_token_from(client.get("/auth/register").get_data(as_text=True))
        return client.post("/auth/register", data={
            "csrf_token": token, "username": name, "password": f"{name}-password-1",
            "confirm": f"{name}-password-1"})

    assert [register(visitor(app, ATTACKER), f"bot{n}").status_code for n in range(3)] == [
        302, 302, 429]
    refused = register(visitor(app, ATTACKER), "bot9")
    assert b"Too many accounts have been created from your address." in refused.data
    assert int(refused.headers["Retry-After"]) > 59 * 60
    assert register(visitor(app, HOME), "carol").status_code == 302
    with app.app_context():
        assert db.session.scalar(select(User.id).where(User.username == "bot9")) is None


@pytest.mark.parametrize("hops", [0, 1])
def test_forwarded_addresses_count_only_behind_a_trusted_proxy(tmp_path, hops):
    config = TestConfig(database_uri=f"sqlite:///{tmp_path / 'proxy.db'}")
    config.TRUSTED_PROXY_HOPS = hops
    app = create_app(config)
    with app.app_context():
        db.create_all()
    proxy = visitor(app, "127.0.0.1")
    attempt(proxy, "alice", "wrong", headers={"X-Forwarded-For": ATTACKER})
    # Behind nginx (one hop) the client's address is the one nginx saw; without a trusted
    # proxy the header is the client's own claim and is ignored.
    expected = ATTACKER if hops else "127.0.0.1"
    assert f"address:{expected}" in counters(app)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# --------------------------------------------------------------------------- concurrency


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_app(request, tmp_path):
    """The app on SQLite and on PostgreSQL: each enforces the limits with its own locks."""
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'throttle.db'}"
    else:
        url, drop = postgres_schema_url()
    app = create_app(TestConfig(database_uri=url))
    with app.app_context():
        db.create_all()
        user = User(username="alice")
        user.set_password("alice-password-1")
        db.session.add(user)
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if drop:
        drop()


def all_at_once(app, addresses: list[str], password: str = "wrong-password") -> list[int]:
    """Each address submits one login for alice, all released at the same instant."""
    clients = [visitor(app, address) for address in addresses]
    tokens = [csrf_token_from(c.get("/auth/login").get_data(as_text=True)) for c in clients]
    start = threading.Barrier(len(clients))
    codes: list[int] = []
    errors: list[BaseException] = []

    def go(client, token):
        start.wait()
        try:
            codes.append(client.post("/auth/login", data={
                "csrf_token": token, "username": "alice", "password": password}).status_code)
        except BaseException as exc:  # shown by the assertion below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=go, args=pair) for pair in zip(clients, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return sorted(codes)


def test_sixteen_simultaneous_guesses_get_exactly_the_five_allowed(shared_app):
    codes = all_at_once(shared_app, [ATTACKER] * 16)
    assert codes == [200] * 5 + [429] * 11
    assert counters(shared_app)[f"pair:alice|{ATTACKER}"] == 5


def test_a_slowed_account_lets_one_of_sixteen_simultaneous_guesses_through(shared_app):
    shared_app.config["LOGIN_ACCOUNT_SLOWDOWN_AFTER"] = 0  # slowed from the first failure
    codes = all_at_once(shared_app, [f"192.0.2.{n}" for n in range(16)])
    assert codes == [200] + [429] * 15
