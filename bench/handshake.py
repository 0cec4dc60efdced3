"""Where a Tidings handshake's time goes: a live profile of the connect phase, and each step alone.

    .venv/bin/python -m bench.handshake --sockets 1000

Two views, because each alone misleads on a loaded machine:

- **live**: N clients connect and subscribe to their three streams, as the browser does, to a
  worker that times each step of the path in CPU time (``BENCH_TIMERS=1``, bench/server.py):
  a sampling profiler measures wall time, and on a machine shared with other work a thread
  that is merely descheduled would look busy.
- **steps**: each step timed alone in this process against the same kind of database (the
  least disturbed of repeats, in CPU time), to see what a change saves without a full run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: What each timed step of bench/server.py's ``TIMED`` is, in path order; inclusive times.
LABELS: list[tuple[str, str]] = [
    ("Flask.wsgi_app", "the handshake request inside Flask (everything below but commands)"),
    ("RequestContext.push", "  request context push (opens the session; also per command)"),
    ("SecureCookieSessionInterface.open_session",
     "    session cookie decode (itsdangerous + JSON)"),
    ("_refusal", "  checks before the upgrade (views._refusal)"),
    ("Realtime.handshake_identity", "    identity (identity cache, session loader or Flask-Login)"),
    ("session_loader", "      the site's session loader (one light query)"),
    ("Realtime.current_identity", "      Flask-Login current_user"),
    ("LoginManager._load_user", "        Flask-Login user lookup"),
    ("load_user", "          user load + session-version check (DB query)"),
    ("origin_allowed", "    Origin check"),
    ("RealtimeState.ensure_started", "    ensure_started"),
    ("Admission.reserve", "    admission: caps and handshake rates"),
    ("Server.__init__", "  flask-sock/simple-websocket handshake (101 written; before 8332e57)"),
    ("upgrade", "  the 101 written (adoption.upgrade)"),
    ("start_connection", "  start_connection (adopt, register, welcome)"),
    ("take_over", "    adopt (dup + socketpair)"),
    ("Connection.__init__", "    Connection()"),
    ("Hub.add", "    hub registration of the socket"),
    ("Logger._log", "    log lines (socket open; all callers)"),
    ("safe_hook", "    the site's connect hooks"),
    ("Reactor.add", "    hand to the reactor"),
    ("Connection.send_json", "  control frames written (welcome, subscribed: all callers)"),
    ("Connection.on_readable", "reactor: reading the client's frames"),
    ("CommandRunner._run", "command pool: the client's commands (one subscribe, 3 streams)"),
    ("_handle", "  parse + dispatch a command"),
    ("subscribe_many", "    subscribe (authorize, hub, heads, replies, catch-up)"),
    ("Hub.subscribe_many", "      hub registration"),
    ("EventStore.head", "      heads read, one query per stream"),
    ("EventStore.heads", "      heads read, one query for several streams (or the sweep)"),
    ("catch_up", "      catch-up (nothing missed: a check)"),
]


def live(n: int, directory: Path) -> dict[str, Any]:
    """Connect ``n`` clients (3 subscribes each) to a Tidings worker that times each step."""
    import requests

    from bench.loadgen import Clients, Spec
    from bench.servers import TOKEN, start_tidings
    from bench.users import create_users, session_cookies

    server = start_tidings(directory, n, extra={"BENCH_TIMERS": "1"})
    clients = None
    try:
        db_url = server.env["DATABASE_URL"]
        uids = create_users(db_url, n)
        cookies = session_cookies(db_url, uids)
        server.post("/bench/broadcast", {"n": 1, "size": 16})
        specs = [Spec(i, uid, cookies[uid], (f"user:{uid}", "broadcast", "role:user"))
                 for i, uid in enumerate(uids)]
        clients = Clients(server.ws_url, server.url)
        server.post("/bench/timers/reset", {})
        cpu_before = server.cpu_seconds()
        conn = clients.connect(specs)
        time.sleep(0.5)  # the last commands finish
        cpu = server.cpu_seconds() - cpu_before
        timers = requests.get(server.url + "/bench/timers", timeout=30,
                              headers={"X-Bench-Token": TOKEN}).json()
        sockets = max(conn["connected"], 1)
        steps = []
        for path, label in LABELS:
            if path in timers:
                entry = timers[path]
                steps.append((label, entry["calls"] / sockets, entry["cpu_s"] / sockets * 1e6,
                              entry["cpu_s"] / max(entry["calls"], 1) * 1e6))
        accounted = sum(timers.get(k, {}).get("cpu_s", 0.0) for k in
                        ("Flask.wsgi_app", "Connection.on_readable", "CommandRunner._run"))
        return {"sockets": conn["connected"], "failed": conn["failed"],
                "connect_per_s": conn["connected"] / conn["seconds"],
                "cpu_us_per_handshake": cpu / sockets * 1e6,
                "outside_us": (cpu - accounted) / sockets * 1e6, "steps": steps}
    finally:
        if clients is not None:
            clients.close()
        server.stop()


def _min_us(fn: Callable[[], Any], loops: int = 200, repeats: int = 7) -> float:
    """CPU µs per call: this thread's CPU time (others' load does not count), the least
    disturbed of several repeats."""
    results = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(loops):
            fn()
        results.append((time.thread_time() - t0) / loops * 1e6)
    return min(results)


def steps(directory: Path, users: int = 200) -> list[tuple[str, float]]:
    """Each step of the handshake and subscribe path timed alone (CPU µs, least of repeats)."""
    from flask import request

    from app.extensions import db, realtime
    from app.models import load_user
    from bench.loadgen import USER_AGENT
    from bench.users import create_users, session_cookies, signing_app
    from flask_tidings import frames
    from flask_tidings.admission import origin_allowed
    from tests.support.live import migrate_database

    directory.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{directory / 'steps.db'}"
    migrate_database({**os.environ, "DATABASE_URL": db_url, "TIDINGS_ENV": "development"})
    uids = create_users(db_url, users)
    cookies = session_cookies(db_url, uids)
    app = signing_app(db_url)
    uid = uids[len(uids) // 2]
    origin = "http://127.0.0.1:8000"
    headers = {"Cookie": cookies[uid], "User-Agent": USER_AGENT, "Origin": origin,
               "Host": "127.0.0.1:8000"}
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    streams = [f"user:{uid}", "broadcast", "role:user"]
    out: list[tuple[str, float]] = []
    with app.app_context():
        state = app.extensions["realtime"]
        for stream in streams:
            realtime.publish(stream, "bench", {"i": 0})

        with app.test_request_context("/ws", headers=headers, environ_base=environ) as ctx:
            base = dict(ctx.request.environ)  # built once: the server hands over a ready environ

        def fresh_user() -> None:
            db.session.remove()  # a new request has an empty identity map
            load_user(f"{uid}.0")

        # Each request gets its own app context (and so an empty ``g``: Flask-Login caches the
        # user there), as in the server.
        def identity() -> None:
            with app.app_context(), app.request_context(dict(base)):
                realtime.current_identity()

        def bare_context() -> None:
            with app.app_context(), app.request_context(dict(base)):
                pass

        def decode_cookie() -> None:
            with app.app_context(), app.request_context(dict(base)):
                app.session_interface.open_session(app, request)

        welcome = {"type": "welcome", "conn": "host:1-1", "user": str(uid), "streams": streams,
                   "heartbeat": 25.0, "max_message_bytes": 65536}
        out.append(("request context push+pop (opens the session)", _min_us(bare_context)))
        out.append(("session cookie decode alone (open_session)", _min_us(decode_cookie)
                    - out[-1][1]))
        out.append(("user load + session-version check (fresh DB session)",
                    _min_us(fresh_user)))
        out.append(("identity: context + cookie + Flask-Login + user load",
                    _min_us(identity)))
        with app.test_request_context("/ws", headers=headers, environ_base=environ):
            out.append(("Origin check", _min_us(lambda: origin_allowed(origin, origin, []),
                                                   loops=2000)))
        state.admission.limits = dataclasses.replace(
            state.admission.limits, handshakes_per_minute=10**9,
            handshakes_per_minute_per_address=10**9)
        out.append(("admission: caps and handshake rates (reserve + release)", _min_us(
            lambda: state.admission.reserve(str(uid), "127.0.0.1", time.monotonic()).release(),
            loops=2000)))
        out.append(("heads: one query per stream (x3)", _min_us(
            lambda: [state.store.head(s) for s in streams])))
        out.append(("heads: one query for the 3 streams", _min_us(
            lambda: state.store.heads(streams))))
        out.append(("welcome frame (JSON + framing)", _min_us(
            lambda: frames.text(json.dumps(welcome, separators=(",", ":"))), loops=2000)))
        db.session.remove()
    return [(label, round(us, 1)) for label, us in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handshake", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--no-live", action="store_true", help="only time the steps alone")
    args = parser.parse_args(argv)
    from bench.run import RESULTS

    directory = RESULTS / time.strftime("handshake-%Y%m%d-%H%M%S")
    print("steps alone (CPU µs, least of 7 repeats):")
    for label, us in steps(directory / "steps"):
        print(f"  {us:8.1f}  {label}")
    if not args.no_live:
        result = live(args.sockets, directory / "live")
        print(f"live: {result['sockets']} sockets at {result['connect_per_s']:.0f}/s, "
              f"{result['cpu_us_per_handshake']:.0f} µs worker CPU per socket (/proc), of which "
              f"{result['outside_us']:.0f} outside the timed steps (gunicorn, access log, reactor "
              "loop, threads)")
        print("  calls/socket  µs/socket  µs/call  step")
        for label, calls, per_socket, per_call in result["steps"]:
            print(f"  {calls:12.1f}  {per_socket:9.0f}  {per_call:7.0f}  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
