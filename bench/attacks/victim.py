"""The victim (another user of the site) and the publisher that feeds it, each a process of its
own, so that neither the attacker's threads nor each other's can slow their clocks.

    python -m bench.attacks.victim victim URL USERNAME PASSWORD  # log in, then page loop and
                                                                 # socket pings; JSON lines out
    python -m bench.attacks.victim publish USER_ID      # one stored event a second to that user

Both write one JSON object per line to stdout (``t`` is ``time.monotonic()``, which is the
same clock in every process of the machine) and exit when their stdin closes. The runner
(:class:`Victim`) starts them, reads their lines, and cuts them into windows.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from statistics import median
from typing import Any

#: Event type the publisher stores on the victim's own stream.
TICK = "bench.attacks.tick"
#: Pause between two page loads, and between two pings, of the victim.
PAGE_PAUSE = 0.1
PING_INTERVAL = 0.1
#: A page slower than this counts as an error (a timeout), a ping without pong as lost.
PAGE_TIMEOUT = 10.0
PONG_TIMEOUT = 5.0


def _emitter():
    lock = threading.Lock()

    def emit(**fields: Any) -> None:
        line = json.dumps(fields)
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    return emit


def _exit_when_stdin_closes() -> None:
    """The parent closes our stdin to stop us (or dies, which closes it too)."""
    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def run_victim(url: str, username: str, password: str) -> None:
    """Log in (waiting for the site to come up), then load the dashboard in a loop and keep one
    socket doing ping round trips."""
    import requests
    import websocket

    from bench.attacks.net import USER_AGENT, cookie_header, login

    emit = _emitter()
    deadline = time.monotonic() + 180
    while True:
        try:
            cookie = cookie_header(login(url, username, password))
            break
        except (requests.RequestException, RuntimeError, AssertionError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"the victim could not log in: {exc}") from None
            time.sleep(0.5)
    emit(k="logged_in", t=time.monotonic())

    def pages() -> None:
        http = requests.Session()
        http.headers.update({"Cookie": cookie, "User-Agent": USER_AGENT})
        while True:
            started = time.monotonic()
            size = 0
            try:
                answer = http.get(url + "/", timeout=PAGE_TIMEOUT, allow_redirects=False)
                status: int | str = answer.status_code
                size = len(answer.content)
                if status == 200 and b"data-username=" not in answer.content:
                    status = "not-logged-in"
            except requests.Timeout:
                status = "timeout"
            except requests.RequestException as exc:
                status = type(exc).__name__
            emit(k="page", t=started, ms=(time.monotonic() - started) * 1000, st=status, b=size)
            time.sleep(PAGE_PAUSE)

    def sockets() -> None:
        last_id: int | None = None
        while True:
            try:
                ws = websocket.create_connection(
                    url.replace("http://", "ws://") + "/ws", cookie=cookie, origin=url,
                    header=[f"User-Agent: {USER_AGENT}"], timeout=PAGE_TIMEOUT)
            except Exception as exc:  # refused handshake, reset, timeout
                emit(k="sock_refused", t=time.monotonic(), why=repr(exc)[:200])
                time.sleep(1.0)
                continue
            try:
                last_id = _socket_session(ws, emit, last_id)
            finally:
                ws.close()
            time.sleep(0.5)

    threading.Thread(target=pages, daemon=True).start()
    threading.Thread(target=sockets, daemon=True).start()


def _socket_session(ws: Any, emit: Any, last_id: int | None) -> int | None:
    """One connection's life: subscribe to our stream from ``last_id``, ping until it ends."""
    import websocket

    welcome = json.loads(ws.recv())
    while welcome.get("type") != "welcome":
        welcome = json.loads(ws.recv())
    stream = f"user:{welcome['user']}"
    subscribe: dict[str, Any] = {"type": "subscribe", "stream": stream, "ref": "own"}
    if last_id is not None:
        subscribe["after"] = last_id
    ws.send(json.dumps(subscribe))
    ws.settimeout(None)
    emit(k="sock_open", t=time.monotonic())
    pending: dict[int, float] = {}
    lock = threading.Lock()
    state = {"last_id": last_id, "done": False}

    def read() -> None:
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    emit(k="sock_close", t=time.monotonic(), code=code)
                    return
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                message = json.loads(data)
                now = time.monotonic()
                if message.get("type") == "pong":
                    with lock:
                        sent = pending.pop(message.get("ref"), None)
                    if sent is not None:
                        emit(k="rtt", t=sent, ms=(now - sent) * 1000)
                elif message.get("stream") == stream and "id" in message:
                    state["last_id"] = message["id"]
                    if message.get("type") == TICK:
                        emit(k="event", t=now, n=message["data"]["n"], id=message["id"])
                elif message.get("type") == "error":
                    emit(k="sock_error", t=now, code=message.get("code"))
        except Exception as exc:
            emit(k="sock_close", t=time.monotonic(), code=repr(exc)[:80])
        finally:
            state["done"] = True

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ref = 0
    silent_since = time.monotonic()
    while not state["done"]:
        now = time.monotonic()
        with lock:
            for old, sent in list(pending.items()):
                if now - sent > PONG_TIMEOUT:
                    del pending[old]
                    emit(k="pong_timeout", t=sent)
            if not pending:
                silent_since = now
        if now - silent_since > 3 * PONG_TIMEOUT:
            emit(k="sock_close", t=now, code="no pong for 15 s")
            break  # a wedged connection: drop it and reconnect
        ref += 1
        with lock:
            pending[ref] = time.monotonic()
        try:
            ws.send(json.dumps({"type": "ping", "ref": ref}))
        except Exception:
            break
        time.sleep(PING_INTERVAL)
    try:
        ws.sock.shutdown(2)
    except Exception:
        pass
    reader.join(timeout=5)
    return state["last_id"]


def run_publisher(user_id: int) -> None:
    """Store one event a second on the victim's stream, as the site's own jobs would."""
    from app import create_app
    from app.extensions import realtime

    emit = _emitter()
    app = create_app()
    with app.app_context():
        n = 0
        while True:
            realtime.notify(user_id, TICK, {"n": n})
            emit(k="pub", t=time.monotonic(), n=n)
            n += 1
            time.sleep(1.0)


def main(argv: list[str]) -> None:
    _exit_when_stdin_closes()
    if argv[0] == "victim":
        run_victim(argv[1], argv[2], argv[3])
    elif argv[0] == "publish":
        run_publisher(int(argv[1]))
    else:
        raise SystemExit(f"unknown role {argv[0]!r}")
    while True:
        time.sleep(3600)


def p99(values: list[float]) -> float | None:
    """The 99th percentile (nearest rank), None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Victim:
    """Runs the victim and the publisher and keeps every line they write."""

    def __init__(self, url: str, username: str, password: str, user_id: int,
                 env: dict[str, str], log_dir: Any):
        self.url, self.user_id, self.env = url, user_id, env
        self.credentials = [username, password]
        self.log_dir = log_dir
        self.samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._processes: list[subprocess.Popen] = []

    def start(self) -> None:
        from tests.support.live import ROOT

        for role, args in (("victim", [self.url, *self.credentials]),
                           ("publish", [str(self.user_id)])):
            errors = open(self.log_dir / f"{role}.stderr", "ab")  # noqa: SIM115 (closed at stop)
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.attacks.victim", role, *args], cwd=ROOT,
                env={**self.env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=errors, text=True)
            process.errors = errors  # type: ignore[attr-defined]
            self._processes.append(process)
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            try:
                sample = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.samples.append(sample)

    def stop(self) -> None:
        for process in self._processes:
            try:
                process.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            process.errors.close()  # type: ignore[attr-defined]

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def between(self, start: float, end: float, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.samples
                    if start <= s["t"] < end and (kind is None or s["k"] == kind)]

    def received(self) -> set[int]:
        with self._lock:
            return {s["n"] for s in self.samples if s["k"] == "event"}

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the victim has loaded a page, done a round trip and received an event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                kinds = Counter(s["k"] for s in self.samples)
            if kinds["page"] and kinds["rtt"] and kinds["event"]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the victim never got going: {dict(kinds)}")

    def lost(self, start: float, end: float, grace: float = 15.0) -> tuple[int, int]:
        """(published in the window, of which not received within ``grace`` s after it)."""
        published = {s["n"] for s in self.between(start, end, "pub")}
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and published - self.received():
            time.sleep(0.2)
        return len(published), len(published - self.received())

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """What the victim saw in [start, end)."""
        return self.figures_over([(start, end)])

    def figures_over(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        """What the victim saw in these windows taken together."""
        def kind(k: str) -> list[dict[str, Any]]:
            return [s for start, end in windows for s in self.between(start, end, k)]

        pages = kind("page")
        ok = [s for s in pages if s["st"] == 200]
        rtts = [s["ms"] for s in kind("rtt")]
        bad_pages = Counter(str(s["st"]) for s in pages if s["st"] != 200)
        closes = Counter(str(s["code"]) for s in kind("sock_close"))
        refused = len(kind("sock_refused"))
        return {
            "pages": len(pages),
            "page_p50_ms": median([s["ms"] for s in pages]) if pages else None,
            "page_p99_ms": p99([s["ms"] for s in pages]),
            "page_max_ms": max((s["ms"] for s in pages), default=None),
            "page_bytes": max((s["b"] for s in ok), default=None),
            "page_errors": dict(bad_pages),
            "pings": len(rtts),
            "rtt_p50_ms": median(rtts) if rtts else None,
            "rtt_p99_ms": p99(rtts),
            "rtt_max_ms": max(rtts, default=None),
            "pong_timeouts": len(kind("pong_timeout")),
            "socket_closes": dict(closes),
            "socket_refused": refused,
        }


if __name__ == "__main__":
    main(sys.argv[1:])
