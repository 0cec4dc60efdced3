"""Throttling of logins (and sign-ups) that slows guessing down without locking the real user out.

Each counter is one ``login_throttles`` row (:class:`~app.models.LoginThrottle`):

* ``pair:<account>|<address>`` — failures of one address against one account. Past
  ``LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS`` that pair waits out the window; the user is
  warned while a few attempts are left. Someone guessing alice's password from their machine
  locks out only themselves, not alice at home.
* ``address:<ip>`` — failures of one address against any account
  (``LOGIN_MAX_FAILURES_PER_ADDRESS``), against one machine trying many names. Behind a proxy, set ``TRUSTED_PROXY_HOPS`` so this is
  the client's address, not the proxy's.
* ``account:<name>`` — failures of one account from anywhere. Never a lockout: past
  ``LOGIN_ACCOUNT_SLOWDOWN_AFTER`` each attempt must wait 1, 2, 4 ... seconds (at most
  ``LOGIN_ACCOUNT_MAX_DELAY_SECONDS``) after the last failure, which caps a botnet's guessing
  rate per account.
* ``register:<ip>``, ``reset:<ip>`` — sign-ups and reset mails per address.

A browser that has logged in to an account before carries a signed "known browser" cookie
(the device cookie of OWASP's guidance); for that account it skips the slowdown and the address
limit, so an attack elsewhere cannot keep the real user out. Its pair counter still applies.

Counting is pessimistic and atomic: an attempt is counted under a lock on its rows *before* the
password is checked (:func:`claim`), and given back if the password was right
(:func:`forgive`). Concurrent requests therefore queue on the rows instead of all passing a
check that none of them has counted yet. The rows of a key are locked in key order (a write
first, so SQLite takes its write lock; ``SELECT ... FOR UPDATE`` on PostgreSQL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import LoginThrottle, utcnow

#: Cookie that marks a browser which has logged in to some accounts before (signed, HttpOnly).
KNOWN_BROWSER_COOKIE = "tidings_known"
#: How long a browser stays known after its last login, and how many accounts it remembers.
KNOWN_BROWSER_DAYS = 365
KNOWN_BROWSER_ACCOUNTS = 5

#: Seconds between two prunes of expired counters in one process.
PRUNE_INTERVAL = 60.0
_last_prune = 0.0


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` failures, then a wait until ``window`` seconds after the last one."""

    key: str
    limit: int
    window: int
    reason: str

    def wait(self, failures: int, last: datetime, now: datetime) -> float:
        if failures < self.limit:
            return 0.0
        return (last + timedelta(seconds=self.window) - now).total_seconds()


@dataclass(frozen=True)
class Slowdown:
    """Free failures, then 1, 2, 4 ... seconds (capped) between attempts."""

    key: str
    free: int
    max_delay: int
    window: int
    reason: str = "account"

    def delay(self, failures: int) -> float:
        if failures == 0 or failures < self.free:
            return 0.0  # no failure yet to wait after, or still among the free ones
        return float(min(2 ** min(failures - self.free, 30), self.max_delay))

    def wait(self, failures: int, last: datetime, now: datetime) -> float:
        return (last + timedelta(seconds=self.delay(failures)) - now).total_seconds()


Rule = Limit | Slowdown


@dataclass(frozen=True)
class Refusal:
    """An attempt refused before it was made; ``reason`` names the counter that refused it."""

    reason: str
    retry_after_seconds: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after_seconds / 60))

    def message(self) -> str:
        if self.reason == "account":
            seconds = self.retry_after_seconds
            return ("This account has had many failed logins, so attempts are slowed down. "
                    f"Try again in {seconds} second{'s' if seconds != 1 else ''}.")
        if self.reason == "pair":
            return ("Too many failed logins for this account from your address. "
                    f"Try again in {self.minutes} minutes.")
        if self.reason == "register":
            return ("Too many accounts have been created from your address. "
                    f"Try again in {self.minutes} minutes.")
        if self.reason == "reset":
            return ("Too many password reset requests from your address. "
                    f"Try again in {self.minutes} minutes.")
        return f"Too many login attempts. Try again in {self.minutes} minutes."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


@dataclass(frozen=True)
class Claim:
    """An attempt counted as a failure until :func:`forgive` gives it back."""

    keys: tuple[str, ...]
    #: Fewest attempts left on a limiting counter after this one; None if nothing limits.
    attempts_left: int | None


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _account(username: str) -> str:
    return username.strip().lower()


def login_rules(username: str, address: str | None, known: bool) -> list[Rule]:
    """The counters a login attempt for ``username`` from ``address`` passes through."""
    config = current_app.config
    window = int(config["LOGIN_FAILURE_WINDOW_SECONDS"])
    account = _account(username)
    rules: list[Rule] = [Limit(f"pair:{account}|{address or 'unknown'}",
                               int(config["LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS"]), window,
                               "pair")]
    if not known:
        if address:
            rules.append(Limit(f"address:{address}", int(config["LOGIN_MAX_FAILURES_PER_ADDRESS"]),
                               window, "address"))
        rules.append(Slowdown(f"account:{account}", int(config["LOGIN_ACCOUNT_SLOWDOWN_AFTER"]),
                              int(config["LOGIN_ACCOUNT_MAX_DELAY_SECONDS"]), window))
    return rules


def signup_rule(kind: str, address: str | None) -> list[Rule]:
    """``kind`` is ``register`` or ``reset``: per-address counts of sign-ups and reset mails."""
    config = current_app.config
    setting = "REGISTRATIONS_PER_ADDRESS" if kind == "register" else "PASSWORD_RESETS_PER_ADDRESS"
    limit = config[setting]
    return [Limit(f"{kind}:{address or 'unknown'}", int(limit),
                  int(config["SIGNUP_WINDOW_SECONDS"]), kind)]


def _insert_missing(keys: Iterable[str], now: datetime) -> None:
    rows = [{"key": key, "failures": 0, "last_failure_at": now} for key in keys]
    dialect = db.session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        db.session.execute(insert(LoginThrottle).values(rows)
                           .on_conflict_do_nothing(index_elements=["key"]))
        return
    for row in rows:  # other databases: one savepoint per key
        try:
            with db.session.begin_nested():
                db.session.add(LoginThrottle(**row))
        except IntegrityError:
            pass


def _locked_rows(keys: list[str], now: datetime) -> dict[str, LoginThrottle]:
    # End any read transaction first: on SQLite the next statement, a write, then takes the
    # write lock at once instead of failing to upgrade a stale read snapshot.
    db.session.commit()
    _insert_missing(keys, now)
    rows = db.session.scalars(
        select(LoginThrottle).where(LoginThrottle.key.in_(keys))
        .order_by(LoginThrottle.key).with_for_update()
        .execution_options(populate_existing=True))
    return {row.key: row for row in rows}


def claim(rules: list[Rule]) -> Claim | Refusal:
    """Count one attempt against every rule, or refuse it (counting nothing) if any rule says
    wait. Commits."""
    rules = sorted(rules, key=lambda rule: rule.key)
    rows = _locked_rows([rule.key for rule in rules], utcnow())
    now = utcnow()  # after the lock: a failure counted while we waited is not in our future
    refusals: list[Refusal] = []
    counts: dict[str, int] = {}
    for rule in rules:
        row = rows[rule.key]
        last = _aware(row.last_failure_at)
        expired = (now - last).total_seconds() >= rule.window
        failures = 0 if expired else row.failures
        wait = rule.wait(failures, last, now)
        if wait > 0:
            refusals.append(Refusal(rule.reason, max(1, math.ceil(wait))))
        counts[rule.key] = failures
    if refusals:
        db.session.rollback()
        return max(refusals, key=lambda refusal: refusal.retry_after_seconds)
    left: list[int] = []
    for rule in rules:
        row = rows[rule.key]
        row.failures = counts[rule.key] + 1
        row.last_failure_at = now
        if isinstance(rule, Limit):
            left.append(rule.limit - row.failures)
    db.session.commit()
    _prune_now_and_then()
    return Claim(tuple(rule.key for rule in rules), min(left) if left else None)


def forgive(claimed: Claim, username: str) -> None:
    """The password was right: the account's counters are cleared (its slowdown too, even when
    this browser was exempt from it), and the address gets this attempt back. Commits."""
    account_key = f"account:{_account(username)}"
    rows = _locked_rows(sorted({*claimed.keys, account_key}), utcnow())
    for key, row in rows.items():
        if key.startswith(("pair:", "account:")):
            db.session.delete(row)
        elif row.failures > 0:
            row.failures -= 1
    db.session.commit()


def prune_expired() -> int:
    """Delete counters whose window has passed, so the table does not grow without bound."""
    config = current_app.config
    longest = max(int(config["LOGIN_FAILURE_WINDOW_SECONDS"]), int(config["SIGNUP_WINDOW_SECONDS"]))
    result = db.session.execute(delete(LoginThrottle).where(
        LoginThrottle.last_failure_at <= utcnow() - timedelta(seconds=longest)))
    db.session.commit()
    return result.rowcount or 0


def _prune_now_and_then() -> None:
    global _last_prune
    if time.monotonic() - _last_prune >= PRUNE_INTERVAL:
        _last_prune = time.monotonic()
        prune_expired()


# --------------------------------------------------------------------------- known browsers


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="known-browser")


def known_accounts() -> list[str]:
    """Accounts this browser has logged in to (from its signed cookie; empty if none or forged)."""
    raw = request.cookies.get(KNOWN_BROWSER_COOKIE)
    if not raw:
        return []
    try:
        accounts = _serializer().loads(raw, max_age=KNOWN_BROWSER_DAYS * 86400)
    except BadSignature:
        return []
    return [a for a in accounts if isinstance(a, str)] if isinstance(accounts, list) else []


def is_known_browser(username: str) -> bool:
    return _account(username) in known_accounts()


def remember_browser(response: Response, username: str) -> None:
    """After a successful login: this browser is known for the account from now on."""
    account = _account(username)
    accounts = [account] + [a for a in known_accounts() if a != account]
    response.set_cookie(
        KNOWN_BROWSER_COOKIE, _serializer().dumps(accounts[:KNOWN_BROWSER_ACCOUNTS]),
        max_age=KNOWN_BROWSER_DAYS * 86400, httponly=True, samesite="Lax",
        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")), path="/auth/")
