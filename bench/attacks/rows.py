"""The attacks of issue 14's table (and its smaller ones about availability), one function each.

Each takes a :class:`Context` (the site, this row's own client addresses, fresh attacker
accounts, the time it may take) and returns an :class:`Outcome`: what the attacker got back
(HTTP statuses, close codes) and the figures that say how far it went. Every loop stops at its
count or at ``ctx.deadline``, whichever comes first; every client talks to 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

from bench.attacks.net import (
    RawSocket,
    browser,
    cookie_header,
    csrf,
    frame,
    login,
    register,
    tcp,
    ws_client,
)
from bench.attacks.site import PASSWORD, Site

#: The victim's account (bench.attacks.site makes it).
VICTIM = "victim00000"
#: A password that passes the registration form's rules.
NEW_PASSWORD = "attacker-pass-1"
#: An id no table can hold (20 digits).
HUGE_ID = "9" * 20


@dataclass
class Context:
    site: Site
    #: This row's number; its clients come from 127.0.<row>.1, .2 ...
    row: int
    seconds: float
    accounts: Iterator[str]
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def source(self, n: int = 1) -> str:
        """The row's ``n``-th machine (1-based)."""
        return f"127.0.{self.row}.{n}"

    @property
    def url(self) -> str:
        return self.site.url

    @property
    def port(self) -> int:
        return self.site.port

    def attacker(self, n: int = 1) -> requests.Session:
        """A fresh account, logged in from the row's ``n``-th machine."""
        return login(self.url, next(self.accounts), PASSWORD, self.source(n))


@dataclass
class Outcome:
    #: What the attacker got back: "429", "close 4029", "dropped after 10 s" ... with counts.
    got: Counter = field(default_factory=Counter)
    #: How far it went, in the row's own terms (rooms made, events stored, MB sent ...).
    figures: dict[str, Any] = field(default_factory=dict)
    #: Checks of the victim beyond the page and socket loops (e.g. "victim logs in: 302").
    checks: dict[str, Any] = field(default_factory=dict)


class Tally(Counter):
    """A Counter that threads can add to."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self[key] += n


def _threads(count: int, target: Callable[[int], None]) -> None:
    workers = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _status(exc_or_status: Any) -> str:
    if isinstance(exc_or_status, int):
        return str(exc_or_status)
    if isinstance(exc_or_status, requests.Timeout):
        return "timeout"
    if isinstance(exc_or_status, requests.HTTPError) and exc_or_status.response is not None:
        return f"{exc_or_status.response.status_code} (on the form page)"
    return type(exc_or_status).__name__


# ---------------------------------------------------------------------------------- control

def control(ctx: Context) -> Outcome:
    """No attack at all: how far the victim's figures move on this machine by themselves."""
    time.sleep(max(0.0, ctx.left()))
    return Outcome()


# ------------------------------------------------------------------------------ slow clients

SLOW_CLIENTS = 32


def slowloris(ctx: Context) -> Outcome:
    """32 connections that each send one byte ("G") and then nothing, kept at 32 (a dropped
    one is opened again at once) for the whole row."""
    out = Outcome()
    held: dict[socket.socket, float] = {}

    def open_one() -> None:
        try:
            conn = tcp(ctx.port, ctx.source(), timeout=5)
            conn.sendall(b"G")
            held[conn] = time.monotonic()
            out.figures["connections opened"] = out.figures.get("connections opened", 0) + 1
        except OSError as exc:
            out.got[f"connect failed: {type(exc).__name__}"] += 1

    for _ in range(SLOW_CLIENTS):
        open_one()
    while ctx.left() > 0:
        readable, _, _ = select.select(list(held), [], [], min(0.5, max(0.0, ctx.left())))
        for conn in readable:
            age = time.monotonic() - held.pop(conn)
            try:
                answer = conn.recv(256)
            except OSError:
                answer = b""
            conn.close()
            match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
            what = f"{match.group(1).decode()}" if match else "dropped, no answer"
            out.got[f"{what} after {round(age)} s"] += 1
            open_one()
    out.got["still held at the end"] += len(held)
    for conn in held:
        conn.close()
    return out


# ------------------------------------------------------------------------- request floods

def _flood(ctx: Context, threads: int, request: Callable[[int], Any], out: Outcome) -> None:
    """``threads`` loops each calling ``request(n)`` back to back until the deadline; every
    answer's status is tallied."""
    tally = Tally()

    def loop(n: int) -> None:
        while ctx.left() > 0:
            try:
                tally.add(_status(request(n)))
            except (requests.RequestException, OSError) as exc:
                tally.add(_status(exc))

    started = time.monotonic()
    _threads(threads, loop)
    out.got.update(tally)
    total = sum(tally.values())
    out.figures["requests"] = total
    out.figures["requests/s"] = round(total / max(0.001, time.monotonic() - started), 1)


def read_all_flood(ctx: Context) -> Outcome:
    """One logged-in user, 24 threads of ``POST /notifications/read-all`` (form + CSRF)."""
    out = Outcome()
    attacker = ctx.attacker()
    token = csrf(attacker, ctx.url + "/notifications")
    cookies = attacker.cookies.get_dict()
    sessions = []
    for _ in range(24):
        http = browser(ctx.source())
        http.cookies.update(cookies)
        sessions.append(http)

    def post(n: int) -> int:
        return sessions[n].post(ctx.url + "/notifications/read-all", timeout=30,
                                allow_redirects=False, data={"csrf_token": token},
                                headers={"Accept": "application/json"}).status_code

    _flood(ctx, 24, post, out)
    return out


def register_flood(ctx: Context) -> Outcome:
    """16 anonymous threads submitting the registration form with fresh names."""
    out = Outcome()
    before = ctx.site.count("SELECT count(*) FROM users")

    def attempt(n: int) -> int:
        return register(browser(ctx.source()), ctx.url, f"flood-{uuid.uuid4().hex[:10]}",
                        NEW_PASSWORD)

    _flood(ctx, 16, attempt, out)
    out.figures["accounts made"] = ctx.site.count("SELECT count(*) FROM users") - before
    return out


# ------------------------------------------------------------------------- socket floods

#: Frames written per send() by a flooding socket.
BATCH = 256


def _flood_socket(ctx: Context, cookie: str, kind: str, tally: Tally, sent: Tally) -> None:
    """One flooding socket that reconnects whenever it is cut, until the deadline.

    ``fragments``: a text frame with FIN=0, then empty continuation frames forever (a message
    that never ends). ``pings``: empty ping control frames back to back.
    """
    while ctx.left() > 0:
        status, raw = RawSocket.handshake(ctx.url, ctx.port, cookie, ctx.source())
        if status != 101:
            tally.add(f"handshake {status}")
            time.sleep(0.2)
            continue
        tally.add("handshake 101")
        assert isinstance(raw, RawSocket)
        if kind == "fragments":
            raw.send(frame(0x1, b"", fin=False))
            unit = frame(0x0, b"", fin=False)
        else:
            unit = frame(0x9, b"")
        batch = unit * BATCH
        while raw.closed_with is None and ctx.left() > 0:
            if not raw.send(batch, timeout=0.5):
                break
            sent.add("frames", BATCH)
            for opcode, _ in raw.frames(0):
                if opcode == 0xA:
                    sent.add("pongs")
        if ctx.left() > 0:
            raw.wait_closed(2.0)
        tally.add("open at the end" if raw.closed_with is None else f"close {raw.closed_with}")
        raw.close()


def socket_flood(kinds: list[str]) -> Callable[[Context], Outcome]:
    def attack(ctx: Context) -> Outcome:
        out = Outcome()
        cookie = cookie_header(ctx.attacker())
        tally, sent = Tally(), Tally()
        rss_before = ctx.site.worker_rss_mb()
        _threads(len(kinds), lambda n: _flood_socket(ctx, cookie, kinds[n], tally, sent))
        out.got.update(tally)
        out.figures["frames sent"] = sent["frames"]
        if "pings" in kinds:
            out.figures["pongs received"] = sent["pongs"]
        out.figures["worker RSS MB"] = f"{rss_before:.0f} -> {ctx.site.worker_rss_mb():.0f}"
        return out

    return attack


# ------------------------------------------------------------------------------------ rooms

ROOMS_WANTED = 10_000


def room_spam(ctx: Context) -> Outcome:
    """One user creating public rooms as fast as 4 threads can, up to 10,000."""
    out = Outcome()
    attacker = ctx.attacker()
    token = csrf(attacker, ctx.url + "/chat/")
    cookies = attacker.cookies.get_dict()
    sessions = []
    for _ in range(4):
        http = browser(ctx.source())
        http.cookies.update(cookies)
        sessions.append(http)
    counter = iter(range(ROOMS_WANTED))
    lock = threading.Lock()
    tally = Tally()
    rooms_before = ctx.site.count("SELECT count(*) FROM chat_rooms")

    def loop(n: int) -> None:
        while ctx.left() > 0:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            try:
                answer = sessions[n].post(
                    ctx.url + "/chat/rooms", timeout=30, allow_redirects=False,
                    headers={"Accept": "application/json"},
                    data={"csrf_token": token, "name": f"spam {number}", "kind": "public"})
                tally.add(f"{answer.status_code}" + (" (made)" if answer.status_code == 302
                                                     else ""))
            except requests.RequestException as exc:
                tally.add(_status(exc))

    _threads(4, loop)
    out.got.update(tally)
    out.figures["attempts"] = sum(tally.values())
    out.figures["rooms made"] = ctx.site.count("SELECT count(*) FROM chat_rooms") - rooms_before
    out.figures["public rooms on the site"] = ctx.site.count(
        "SELECT count(*) FROM chat_rooms WHERE kind = 'public'")
    return out


# --------------------------------------------------------------------------------- lockouts

def _login_status(http: requests.Session, ctx: Context, username: str, password: str) -> str:
    """The login form's answer: "302", "200" (wrong), or "429 (Retry-After: n)"."""
    try:
        token = csrf(http, ctx.url + "/auth/login")
        answer = http.post(ctx.url + "/auth/login", timeout=30, allow_redirects=False, data={
            "csrf_token": token, "username": username, "password": password})
    except requests.RequestException as exc:
        return _status(exc)
    if answer.status_code == 429:
        return f"429 (Retry-After: {answer.headers.get('Retry-After')})"
    return str(answer.status_code)


def _known_browser(ctx: Context, source: str, username: str) -> requests.Session:
    """A browser that has logged in to ``username`` before (it carries the known-browser
    cookie) and is logged out now."""
    http = login(ctx.url, username, PASSWORD, source)
    known = {c.name: c.value for c in http.cookies if c.name == "tidings_known"}
    fresh = browser(source)
    fresh.cookies.update(known)
    return fresh


def password_guessing(ctx: Context) -> Outcome:
    """5 wrong passwords for the victim's name from one machine (and a 6th); then the same from
    4 more machines (25 failures: past the per-account slowdown). After each, the real user
    logs in from home (127.0.0.1), with a new browser and with their usual one."""
    out = Outcome()
    usual = _known_browser(ctx, "127.0.0.1", VICTIM)
    attacker = browser(ctx.source())
    for n in range(6):
        status = _login_status(attacker, ctx, VICTIM, f"wrong-guess-{n}")
        out.got[f"{status} (guess {'6' if n == 5 else '1-5'})"] += 1
    out.checks["victim logs in, new browser, after 5 guesses"] = _login_status(
        browser("127.0.0.1"), ctx, VICTIM, PASSWORD)
    for machine in range(2, 6):
        guesser = browser(ctx.source(machine))
        for n in range(5):
            out.got[f"{_login_status(guesser, ctx, VICTIM, f'botnet-{machine}-{n}')} "
                    "(4 more machines x 5)"] += 1
    out.checks["victim logs in, new browser, after 25 guesses"] = _login_status(
        browser("127.0.0.1"), ctx, VICTIM, PASSWORD)
    out.checks["victim logs in, usual browser, after 25 guesses"] = _login_status(
        usual, ctx, VICTIM, PASSWORD)
    return out


def junk_names(ctx: Context) -> Outcome:
    """20 junk usernames from one machine (then 3 more). Then: the victim from elsewhere; a
    neighbour behind the same address whose browser has logged in before; a neighbour with a
    new browser."""
    out = Outcome()
    neighbour = next(ctx.accounts)
    usual = _known_browser(ctx, ctx.source(), neighbour)
    attacker = browser(ctx.source())
    for n in range(23):
        status = _login_status(attacker, ctx, f"junk-{uuid.uuid4().hex[:8]}", "wrong-password")
        out.got[f"{status} (name {'21-23' if n >= 20 else '1-20'})"] += 1
    out.checks["victim logs in from elsewhere"] = _login_status(
        browser("127.0.0.1"), ctx, VICTIM, PASSWORD)
    out.checks["neighbour, same address, usual browser"] = _login_status(
        usual, ctx, neighbour, PASSWORD)
    other = next(ctx.accounts)
    out.checks["neighbour, same address, new browser"] = _login_status(
        browser(ctx.source()), ctx, other, PASSWORD)
    return out


# ---------------------------------------------------------------------------------- uploads

UPLOAD_BYTES = 300 * 1024 * 1024
CHUNK = b"\0" * 65536


def _upload(ctx: Context, chunked: bool) -> tuple[str, float, float]:
    """POST a 300 MB multipart body to /auth/login without logging in; (status, MB the server
    took before answering, seconds)."""
    boundary = "bench-attacks-boundary"
    head = (f"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1:{ctx.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked
               else f"Content-Length: {UPLOAD_BYTES}\r\n")
            + "Connection: close\r\n\r\n").encode()
    preamble = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                "filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    started = time.monotonic()
    sent = 0
    conn = tcp(ctx.port, ctx.source(), timeout=5)
    answer = b""
    try:
        conn.sendall(head)
        piece = preamble + CHUNK
        while sent < UPLOAD_BYTES and ctx.left() > 0:
            readable, writable, _ = select.select([conn], [conn], [], 1.0)
            if readable:
                answer = conn.recv(4096)
                break
            if writable:
                data = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
                sent += conn.send(data)
                piece = CHUNK
        if not answer:
            conn.settimeout(max(1.0, ctx.left()))
            answer = conn.recv(4096)
    except OSError:
        conn.settimeout(2)
        try:
            answer = answer or conn.recv(4096)
        except OSError:
            pass
    finally:
        conn.close()
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    status = match.group(1).decode() if match else "dropped, no answer"
    return status, sent / 2**20, time.monotonic() - started


def big_upload(ctx: Context) -> Outcome:
    """Two 300 MB multipart uploads to /auth/login at once (Content-Length), then one
    chunked (no length announced)."""
    out = Outcome()
    results: list[tuple[str, tuple[str, float, float]]] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        result = _upload(ctx, chunked=n == 2)
        with lock:
            results.append(("chunked" if n == 2 else "length", result))

    _threads(2, one)
    one(2)
    for how, (status, megabytes, seconds) in sorted(results):
        out.got[f"{status} ({how})"] += 1
        out.figures[f"MB sent before the answer ({how})"] = out.figures.get(
            f"MB sent before the answer ({how})", []) + [round(megabytes, 2)]
        out.figures[f"seconds ({how})"] = out.figures.get(f"seconds ({how})", []) + [
            round(seconds, 2)]
    return out


# -------------------------------------------------------------------------- accounts, sockets

REGISTRATIONS = 25
SIGN_UP_THREADS = 5
SOCKETS_PER_ACCOUNT = 21
PARALLEL_HANDSHAKES = 60
#: Accounts the attacker already owns, logged in from the same machine, to reach the per-address
#: socket cap (200) that 5 sign-ups cannot.
EXTRA_ACCOUNTS = 5


def accounts_and_sockets(ctx: Context) -> Outcome:
    """25 sign-ups from one machine (5 at a time); 21 sockets from each account it got; 60
    parallel handshakes of one more account; then 5 more accounts of the attacker's, 21 sockets
    each, from the same machine (past the per-address cap). While all that is open, the victim
    opens a new socket."""
    out = Outcome()
    held: list[RawSocket] = []
    made: list[requests.Session] = []
    lock = threading.Lock()
    try:
        numbers = iter(range(REGISTRATIONS))

        def sign_up(n: int) -> None:
            while ctx.left() > 0:
                with lock:
                    if next(numbers, None) is None:
                        return
                http = browser(ctx.source())
                status = register(http, ctx.url, f"signup-{uuid.uuid4().hex[:10]}",
                                  NEW_PASSWORD)
                with lock:
                    out.got[f"sign-up {status}"] += 1
                    if status == 302:
                        made.append(http)

        started = time.monotonic()
        _threads(SIGN_UP_THREADS, sign_up)
        out.figures["accounts made"] = len(made)
        out.figures["sign-up s"] = round(time.monotonic() - started, 1)

        def open_sockets(cookie: str, count: int, label: str) -> int:
            opened = 0
            for _ in range(count):
                if ctx.left() < 3:
                    break
                status, raw = RawSocket.handshake(ctx.url, ctx.port, cookie, ctx.source())
                out.got[f"{label} handshake {status}"] += 1
                if isinstance(raw, RawSocket):
                    held.append(raw)
                    opened += 1
            return opened

        out.figures["sockets of the new accounts"] = sum(
            open_sockets(cookie_header(http), SOCKETS_PER_ACCOUNT, "new-account")
            for http in made if ctx.left() > 0)

        racer = cookie_header(ctx.attacker())
        barrier = threading.Barrier(PARALLEL_HANDSHAKES)
        raced = Tally()

        def race(n: int) -> None:
            barrier.wait(timeout=30)
            status, raw = RawSocket.handshake(ctx.url, ctx.port, racer, ctx.source())
            raced.add(str(status))
            if isinstance(raw, RawSocket):
                with lock:
                    held.append(raw)

        _threads(PARALLEL_HANDSHAKES, race)
        for status, count in raced.items():
            out.got[f"parallel handshake {status}"] += count
        out.figures["parallel handshakes that got a socket (cap 20)"] = raced["101"]

        for _ in range(EXTRA_ACCOUNTS):
            if ctx.left() < 5:
                break
            open_sockets(cookie_header(ctx.attacker()), SOCKETS_PER_ACCOUNT, "more-accounts")
        for raw in held:
            raw.frames(0)  # notices a socket the server has closed since
        out.figures["sockets open from one address (cap 200)"] = sum(
            1 for raw in held if raw.closed_with is None)

        victim = browser("127.0.0.1")
        victim = login(ctx.url, VICTIM, PASSWORD, http=victim)
        try:
            ws = ws_client(ctx.url, ctx.port, cookie_header(victim))
            ws.close()
            out.checks["victim opens a new socket meanwhile"] = "101"
        except websocket.WebSocketBadStatusException as exc:
            out.checks["victim opens a new socket meanwhile"] = str(exc.status_code)
        time.sleep(min(3.0, max(0.0, ctx.left())))
    finally:
        for raw in held:
            raw.close()
    return out


# -------------------------------------------------------------------------------- mark_read

#: The documented inbound rate (REALTIME_RATE): 20 messages a second per socket.
MARK_READ_RATE = 20.0


def mark_read_log(sockets_wanted: int) -> Callable[[Context], Outcome]:
    def attack(ctx: Context) -> Outcome:
        return _mark_read_log(ctx, sockets_wanted)

    return attack


def _mark_read_log(ctx: Context, sockets_wanted: int) -> Outcome:
    """A new account (it has its welcome notification) keeps ``sockets_wanted`` sockets sending
    ``notifications.mark_read`` at the documented rate for the whole row; how many events does
    the durable log store, and what do the commands cost the worker?"""
    out = Outcome()
    http = browser(ctx.source())
    username = f"reader-{uuid.uuid4().hex[:10]}"
    if register(http, ctx.url, username, NEW_PASSWORD) != 302:
        username = next(ctx.accounts)
        http = login(ctx.url, username, PASSWORD, ctx.source())
    cookie = cookie_header(http)
    sockets = [ws_client(ctx.url, ctx.port, cookie, ctx.source())
               for _ in range(sockets_wanted)]
    user_id = ctx.site.count("SELECT id FROM users WHERE username = ?", username)
    # Only the attacker's own stream: the victim's publisher stores one event a second too.
    events = "SELECT count(*) FROM realtime_events WHERE stream = ?"
    before = ctx.site.count(events, f"user:{user_id}")
    tally = Tally()
    sent = Tally()
    started = time.monotonic()

    def run(n: int) -> None:
        ws = sockets[n]
        done, closing = threading.Event(), threading.Event()

        def read() -> None:
            try:
                while True:
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE and not closing.is_set():
                        code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                        tally.add(f"close {code}")
                        return
                    if opcode == websocket.ABNF.OPCODE_TEXT:
                        message = json.loads(data)
                        kind = message.get("type")
                        if kind == "error":
                            tally.add(f"error {message.get('code')}")
                        elif kind == "reply":
                            tally.add("reply")
            except Exception:
                pass
            finally:
                done.set()

        ws.settimeout(None)
        threading.Thread(target=read, daemon=True).start()
        k = 0
        due = time.monotonic()
        while ctx.left() > 0 and not done.is_set():
            # At the rate, never faster: after a stall (a loaded machine) the next command
            # waits its interval instead of catching up in a burst.
            due = max(due + 1 / MARK_READ_RATE, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                ws.send(json.dumps({"type": "notifications.mark_read", "ref": k,
                                    "data": {"all": True}}))
            except Exception:
                break
            sent.add("commands")
            k += 1
        time.sleep(1.0)  # the last replies
        closing.set()
        ws.close()
        done.wait(5)

    _threads(sockets_wanted, run)
    out.got.update(tally)
    out.figures["commands sent"] = sent["commands"]
    out.figures["commands/s"] = round(sent["commands"] / max(0.001, time.monotonic() - started))
    out.figures["events stored on the attacker's stream"] = (
        ctx.site.count(events, f"user:{user_id}") - before)
    out.figures["events in the whole log"] = ctx.site.count(
        "SELECT count(*) FROM realtime_events")
    out.figures["login_throttles rows"] = ctx.site.count("SELECT count(*) FROM login_throttles")
    return out


# ----------------------------------------------------------------------- the smaller ones

def emoji_message(ctx: Context) -> Outcome:
    """One text message of 60,000 emoji (240,000 UTF-8 bytes, 60,000 characters), 3 times."""
    out = Outcome()
    cookie = cookie_header(ctx.attacker())
    payload = ("\U0001F600" * 60_000).encode()
    rss_before = ctx.site.worker_rss_mb()
    for _ in range(3):
        status, raw = RawSocket.handshake(ctx.url, ctx.port, cookie, ctx.source())
        if not isinstance(raw, RawSocket):
            out.got[f"handshake {status}"] += 1
            continue
        raw.send(frame(0x1, payload), timeout=10)
        out.got[f"close {raw.wait_closed(10)}"] += 1
        raw.close()
    out.figures["worker RSS MB"] = f"{rss_before:.0f} -> {ctx.site.worker_rss_mb():.0f}"
    return out


def bad_handshakes(ctx: Context) -> Outcome:
    """Handshakes a browser would never send, and an Origin with the wrong scheme."""
    out = Outcome()
    cookie = cookie_header(ctx.attacker())
    host = ctx.url.split("//", 1)[1]
    cases = {
        "version 8": {"Sec-WebSocket-Version": "8"},
        "empty version": {"Sec-WebSocket-Version": ""},
        "no key": {"Sec-WebSocket-Key": None},
        "bad key": {"Sec-WebSocket-Key": "not base64!"},
        "https Origin": {"Origin": f"https://{host}"},
    }
    for name, headers in cases.items():
        status, answer = RawSocket.handshake(ctx.url, ctx.port, cookie, ctx.source(), headers)
        if isinstance(answer, RawSocket):
            answer.close()
            out.got[f"{name}: 101"] += 1
            continue
        kind = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", answer)
        out.got[f"{name}: {status} {kind.group(1).decode() if kind else ''}".strip()] += 1
    return out


def huge_ids(ctx: Context) -> Outcome:
    """20-digit ids on each URL and socket command the issue lists."""
    out = Outcome()
    http = ctx.attacker()
    token = csrf(http, ctx.url + "/chat/")
    made = http.post(ctx.url + "/chat/rooms", allow_redirects=False, timeout=30,
                     data={"csrf_token": token, "name": "ids", "kind": "public"})
    room = made.headers.get("Location", "/chat/1").rstrip("/").rsplit("/", 1)[-1]
    requests_ = [
        ("GET", f"/chat/{room}/messages?before={HUGE_ID}"),
        ("GET", f"/notifications?page={HUGE_ID}"),
        ("POST", f"/notifications/{HUGE_ID}/read"),
        ("POST", f"/announcements/{HUGE_ID}/dismiss"),
        ("GET", f"/chat/{HUGE_ID}"),
    ]
    for method, path in requests_:
        answer = http.request(method, ctx.url + path, allow_redirects=False, timeout=30,
                              data={"csrf_token": token} if method == "POST" else None)
        out.got[f"{method} {path.split('?')[0].replace(HUGE_ID, '<20 digits>')}: "
                f"{answer.status_code}"] += 1
    ws = ws_client(ctx.url, ctx.port, cookie_header(http), ctx.source())
    try:
        for kind, data in (("notifications.mark_read", {"ids": [int(HUGE_ID)]}),
                           ("announcement.dismiss", {"id": int(HUGE_ID)})):
            ws.send(json.dumps({"type": kind, "ref": kind, "data": data}))
            while True:
                message = json.loads(ws.recv())
                if message.get("ref") == kind:
                    break
            out.got[f"socket {kind}: {message.get('code') or message.get('type')}"] += 1
    finally:
        ws.close()
    return out


CHAT_SENDERS = 16


def chat_burst(ctx: Context) -> Outcome:
    """16 sockets of one user each send one ``chat.send`` at the same instant."""
    out = Outcome()
    http = ctx.attacker()
    token = csrf(http, ctx.url + "/chat/")
    made = http.post(ctx.url + "/chat/rooms", allow_redirects=False, timeout=30,
                     data={"csrf_token": token, "name": "burst", "kind": "public"})
    room = int(made.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    cookie = cookie_header(http)
    sockets = [ws_client(ctx.url, ctx.port, cookie, ctx.source()) for _ in range(CHAT_SENDERS)]
    barrier = threading.Barrier(CHAT_SENDERS)
    tally = Tally()

    def send(n: int) -> None:
        ws = sockets[n]
        barrier.wait(timeout=30)
        ws.send(json.dumps({"type": "chat.send", "ref": n, "data": {
            "room": room, "body": f"burst {n}", "client_id": f"burst{n}"}}))
        try:
            while True:
                message = json.loads(ws.recv())
                if message.get("ref") == n:
                    tally.add("sent" if message.get("type") == "reply"
                              else f"error {message.get('code')}")
                    return
        except Exception as exc:
            tally.add(type(exc).__name__)

    try:
        _threads(CHAT_SENDERS, send)
    finally:
        for ws in sockets:
            ws.close()
    out.got.update(tally)
    out.figures["messages stored"] = ctx.site.count(
        "SELECT count(*) FROM chat_messages WHERE room_id = ?", room)
    return out
