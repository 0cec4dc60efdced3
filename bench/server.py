"""Tidings under test: the real site plus a token-guarded endpoint that publishes inside a worker.

With one worker and no Redis the broker is in-process, so a publisher outside the server could
not reach its sockets; publishing through ``realtime.broadcast``/``notify`` from a request in the
worker is the real path an app's view takes. Run as ``gunicorn -c gunicorn.conf.py bench.server:app``.
"""

from __future__ import annotations

import functools
import importlib
import os
import random
import threading
import time
import tracemalloc
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from app import create_app
from app.extensions import csrf, realtime

#: Requests without ``X-Bench-Token: $BENCH_TOKEN`` get 404, so this module is inert without it.
TOKEN = os.environ.get("BENCH_TOKEN", "")
#: Bounds on one request, so a typo cannot wedge the server under test.
MAX_COUNT = 20_000
MAX_SIZE = 1 << 20

bp = Blueprint("bench", __name__, url_prefix="/bench")


@bp.before_request
def guard() -> None:
    if not TOKEN or request.headers.get("X-Bench-Token") != TOKEN:
        abort(404)


def _count_and_pad(body: dict[str, Any]) -> tuple[int, str]:
    count = max(0, min(int(body.get("n", 1)), MAX_COUNT))
    return count, "x" * max(0, min(int(body.get("size", 0)), MAX_SIZE))


@bp.post("/broadcast")
def broadcast() -> Any:
    """``{"n": k, "size": bytes}``: k broadcasts, one after the other, as fast as they are stored."""
    count, pad = _count_and_pad(request.get_json(force=True))
    ids = [realtime.broadcast("bench", {"i": i, "pad": pad})[0].seq for i in range(count)]
    return jsonify(ids=ids)


@bp.post("/notify")
def notify() -> Any:
    """``{"n": k, "size": b, "users": [ids]}`` (round robin) or ``"random": [lo, hi]``."""
    body = request.get_json(force=True)
    count, pad = _count_and_pad(body)
    users = [int(u) for u in body.get("users") or []]
    low, high = body.get("random") or (0, 0)
    sent = []
    for i in range(count):
        user = users[i % len(users)] if users else random.randint(int(low), int(high))
        sent.append([user, realtime.notify(user, "bench", {"i": i, "pad": pad}).seq])
    return jsonify(sent=sent)


#: ``BENCH_TIMERS=1``: CPU time (this thread's, ``time.thread_time``) spent inside each step of
#: the handshake and subscribe path, summed per step, read with ``GET /bench/timers``. Inclusive:
#: a step's time contains the steps it calls. Read by bench/handshake.py.
TIMED = [
    # (module, attribute path) of every step worth a line; missing ones are skipped, so a
    # refactor of the package does not break the bench (the report lists what was found).
    ("flask.app", "Flask.wsgi_app"),
    ("flask_tidings.views", "_refusal"),
    ("flask_tidings.extension", "Realtime.handshake_identity"),
    ("flask_tidings.extension", "Realtime.current_identity"),
    ("flask.sessions", "SecureCookieSessionInterface.open_session"),
    ("flask_login.login_manager", "LoginManager._load_user"),
    ("flask_tidings.views", "origin_allowed"),
    ("flask_tidings.admission", "Admission.reserve"),
    ("flask_tidings.extension", "RealtimeState.ensure_started"),
    ("simple_websocket.ws", "Server.__init__"),
    ("flask_tidings.views", "upgrade"),
    ("flask_tidings.views", "start_connection"),
    ("flask_tidings.views", "take_over"),
    ("flask_tidings.connection", "Connection.__init__"),
    ("flask_tidings.hub", "Hub.add"),
    ("flask_tidings.views", "safe_hook"),
    ("logging", "Logger._log"),
    ("flask_tidings.connection", "Connection.send_json"),
    ("flask_tidings.reactor", "Reactor.add"),
    ("flask_tidings.connection", "Connection.on_readable"),
    ("flask_tidings.commands", "CommandRunner._run"),
    ("flask.ctx", "RequestContext.push"),
    ("flask_tidings.commands", "_handle"),
    ("flask_tidings.commands", "subscribe_many"),
    ("flask_tidings.store", "EventStore.head"),
    ("flask_tidings.store", "EventStore.heads"),
    ("flask_tidings.commands", "catch_up"),
    ("flask_tidings.hub", "Hub.subscribe_many"),
    # The publish path (scenario PUB).
    ("flask.app", "Flask.preprocess_request"),
    ("flask.app", "Flask.dispatch_request"),
    ("flask.app", "Flask.process_response"),
    ("flask.ctx", "RequestContext.pop"),
    ("flask_tidings.extension", "Realtime.publish"),
    ("flask_tidings.extension", "_check_event"),
    ("flask_tidings.extension", "RealtimeState.publisher"),
    ("flask_tidings.store", "SqliteWriter.__enter__"),
    ("flask_tidings.store", "SqliteWriter.__exit__"),
    ("flask_tidings.store", "EventStore.append"),
    ("flask_tidings.store", "envelope"),
    ("flask_tidings.local", "LocalBroker.publish"),
    ("flask_tidings.brokers", "MemoryBroker.publish"),
    ("flask_tidings.brokers", "RedisBroker.publish"),
    ("flask_tidings.brokers", "PostgresBroker.publish"),
    # Fan-out, and the log reads a gap in the pushes costs (several workers).
    ("flask_tidings.hub", "Hub.dispatch"),
    ("flask_tidings.connection", "Connection.offer_many"),
    ("flask_tidings.store", "EventStore.read_since"),
    ("flask_tidings.extension", "RealtimeState.sweep"),
]
_timers: dict[str, list[float]] = {}
_timers_lock = threading.Lock()


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - t0
            with _timers_lock:
                entry = _timers.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += spent

    return wrapper


def install_timers() -> list[str]:
    found = []
    for module_name, path in TIMED:
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        *parents, attr = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        fn = getattr(owner, attr, None) if owner is not None else None
        if fn is None:
            continue
        setattr(owner, attr, _timed(path, fn))
        found.append(path)
    import app.models  # noqa: F401  (registers the user loader)
    from app.extensions import login_manager, realtime

    if getattr(login_manager, "_user_callback", None) is not None:  # registered, not looked up
        login_manager._user_callback = _timed("load_user", login_manager._user_callback)
        found.append("load_user")
    if getattr(realtime, "_session_loader", None) is not None:
        realtime._session_loader = _timed("session_loader", realtime._session_loader)
        found.append("session_loader")
    return found


@bp.get("/timers")
def timers() -> Any:
    with _timers_lock:
        return jsonify({name: {"calls": n, "cpu_s": spent} for name, (n, spent) in _timers.items()})


@bp.post("/timers/reset")
def reset_timers() -> Any:
    with _timers_lock:
        _timers.clear()
    return jsonify(ok=True)


@bp.get("/head")
def head() -> Any:
    stream = request.args.get("stream", "broadcast")
    return jsonify(head=current_app.extensions["realtime"].store.head(stream))


#: ``BENCH_MEMORY=1``: ``GET /bench/memory`` answers where the worker's memory is: glibc's heap
#: (in use vs held free), /proc's view of the address space, SQLite's own allocations and the
#: pool. ``BENCH_MEMORY=trace`` also traces every allocation (tracemalloc, 8 frames) and adds
#: what grew since the previous call: allocation sites and live objects by type (what keeps
#: growing shows in every report, warm-up only in the first ones). Off by default:
#: tracing costs CPU on every allocation. Read by ``python -m bench.soak --memory [--trace]``.
MEMORY = os.environ.get("BENCH_MEMORY", "")
_memory_base: dict[str, Any] = {}


def _mallinfo() -> dict[str, int]:
    """glibc's own count over every arena: bytes in use, and bytes held free (fragmentation)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"arena_kb": info.arena // 1024, "mmap_kb": info.hblkhd // 1024,
            "in_use_kb": info.uordblks // 1024, "free_kb": info.fordblks // 1024}


def _maps() -> dict[str, int]:
    """RSS (kB) of the heap, of anonymous mappings (thread arenas, stacks, sqlite/pymalloc) and of
    files, from /proc/self/smaps; plus the count of anonymous mappings."""
    out = {"heap_kb": 0, "anon_kb": 0, "file_kb": 0, "anon_maps": 0,
           "threads": threading.active_count()}
    kind = "anon"
    with open("/proc/self/smaps") as smaps:
        lines = smaps.readlines()
    for line in lines:
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split()
            name = parts[5] if len(parts) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
            if kind == "anon":
                out["anon_maps"] += 1
        elif first == "Rss:":
            out[kind + "_kb"] += int(line.split()[1])
    return out


#: Every OS thread id this worker has run (``/proc/self/task``), to see threads come and go:
#: glibc gives each new thread a stack and per-thread malloc state.
_tids_seen: set[int] = set()


def _threads() -> dict[str, int]:
    """OS threads now, and how many thread ids were new since the previous report."""
    tids = {int(t) for t in os.listdir("/proc/self/task")}
    new = len(tids - _tids_seen)
    _tids_seen.update(tids)
    return {"os_threads": len(tids), "new_tids": new, "tids_ever": len(_tids_seen)}


def _sqlite_kb() -> int | None:
    """What SQLite itself holds (every connection's page cache and statements), via its
    ``sqlite3_memory_used``; ``None`` where the symbol cannot be reached."""
    import ctypes

    import _sqlite3

    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    return used() // 1024


@bp.get("/memory")
def memory() -> Any:
    import gc
    from collections import Counter

    if not MEMORY:
        abort(404)
    pool = current_app.extensions["realtime"].store.engine.pool
    report: dict[str, Any] = {"pid": os.getpid(), "malloc": _mallinfo(), "maps": _maps(),
                              "sqlite_kb": _sqlite_kb(), "pool": pool.status(),
                              "threads": _threads()}
    if not tracemalloc.is_tracing():
        return jsonify(report)
    gc.collect()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    report["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
    if not _memory_base:
        _memory_base.update(snap=snap, types=types)
        return jsonify(report)
    top = int(request.args.get("top", 12))
    grew = [s for s in snap.compare_to(_memory_base["snap"], "traceback") if s.size_diff > 0]
    report["sites"] = [
        {"kb": s.size_diff // 1024, "count": s.count_diff,
         "where": [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}"
                   for f in s.traceback][-6:]}
        for s in grew[:top]]
    diff = Counter(types)
    diff.subtract(_memory_base["types"])
    _memory_base.update(snap=snap, types=types)  # the next report: what grew since this one
    report["objects"] = [[name, n] for name, n in diff.most_common(top) if n > 0]
    return jsonify(report)


if MEMORY == "trace":
    tracemalloc.start(8)


#: ``BENCH_PROFILE=<path>``: every handshake request, reactor read and command-pool turn runs
#: under cProfile on this thread's CPU clock (a descheduled thread costs nothing), and
#: ``POST /bench/profile`` writes their sum to ``<path>`` (pstats). Far slower than timers, so
#: only the shape of the profile is evidence, not its totals.
PROFILE = os.environ.get("BENCH_PROFILE", "")
_profiles: list[Any] = []


def _profiled(fn: Any) -> Any:
    import cProfile

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        environ = args[0] if args and isinstance(args[0], dict) else {}
        if environ.get("PATH_INFO", "").startswith("/bench"):
            return fn(*args, **kwargs)  # the harness's own requests
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            profile.disable()
            with _timers_lock:
                _profiles.append(profile)

    return wrapper


def install_profile() -> None:
    from flask_tidings import commands, connection

    for owner, attr in ((commands.CommandRunner, "_run"),
                        (connection.Connection, "on_readable")):
        setattr(owner, attr, _profiled(getattr(owner, attr)))


@bp.post("/profile")
def write_profile() -> Any:
    import pstats

    with _timers_lock:
        taken, _profiles[:] = list(_profiles), []
    if not PROFILE or not taken:
        abort(404)
    stats = pstats.Stats(taken[0])
    for profile in taken[1:]:
        stats.add(profile)
    stats.dump_stats(PROFILE)
    return jsonify(profiles=len(taken))


if os.environ.get("BENCH_TIMERS") == "1":
    install_timers()
if PROFILE:
    install_profile()
#: ``BENCH_POOL="pool_size=4,max_overflow=100,pool_use_lifo=1"``: engine options (integers) over
#: the site's own, to measure what the pool's size does to a soak's memory without editing
#: app/config.py (docs/reliability.md, "Soak": run B).
_config = None
if os.environ.get("BENCH_POOL"):
    from app.config import config_from_env

    _config = config_from_env()()
    for item in os.environ["BENCH_POOL"].split(","):
        key, value = item.split("=")
        _config.SQLALCHEMY_ENGINE_OPTIONS[key] = int(value)
app = create_app(_config)
csrf.exempt(bp)
app.register_blueprint(bp)
if PROFILE:
    # The whole handshake request, from gunicorn's call to the response (the WSGI app).
    app.wsgi_app = _profiled(app.wsgi_app)  # type: ignore[method-assign]
