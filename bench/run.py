"""Orchestrates the scenarios against Tidings, the naive baseline and the reference, then reports.

Three servers side by side in every scenario they can run: Tidings (the real site), the naive
flask-sock loop (bench/naive_app.py) and the reference, websockets on uvloop
(bench/ref_server.py). Every client follows its user stream, ``broadcast`` and its role stream,
as the browser does.

Scenarios (see bench/RESULTS.md): **A** broadcast at 20/s; **B** broadcasts back to back, one per
HTTP request from concurrent posters (the headline: how an admin form or a chat message
publishes); **B500** 500 broadcasts from one request (batched, synthetic); **C** notifications to
random users; **S** 2% stalled readers; **W** two workers + Redis; **P** page loads while sockets
are open; **PUB** server CPU per publish request with no socket open; **R** reconnect storm
(SIGTERM + restart, every client reconnects with the browser's jitter and resumes). The connect
rate and the server's CPU per handshake are measured as each session opens.
Every loop is bounded in count and time; servers run in their own process group and are always
killed in ``finally``.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench import outofprocess
from bench.loadgen import USER_AGENT, Clients, Spec
from bench.report import write_outputs
from bench.servers import (
    ROOT,
    TOKEN,
    Server,
    _cpu_ticks,
    start_naive,
    start_ref,
    start_tidings,
)
from bench.users import create_users, session_cookies, signing_app

RESULTS = ROOT / "bench" / "results"
#: Scenario A and S: broadcasts per second, for how long, payload padding.
RATE, SECONDS, SIZE = 20, 5.0, 64
#: Scenario B (the headline): broadcasts back to back, one per HTTP request, from this many
#: concurrent posters (an admin form, a chat message: one event per request).
POSTED, POSTERS = 300, 8
#: Scenario B500 (batched, synthetic): this many broadcasts published by one request.
BURST = 500
#: Scenario PUB: publish requests (one event each) to a server with no socket open.
PUB_COUNT, PUB_POSTERS = 400, 4
#: Scenario R: broadcasts per second published out of process (a job queue, cron) all through the
#: storm, also while the server is down; how long to wait for every client to come back.
STORM_RATE, STORM_TIMEOUT = 10, 240.0
#: Scenario C: notifications, each to one random user.
NOTIFICATIONS = 5000
#: Scenario S: share of stalled clients, and what each is sent to fill its buffers (8 MB: more
#: than the 4 MB a loopback send buffer grows to plus Tidings' 1 MiB outbox).
STALLED_SHARE, FILL_COUNT, FILL_SIZE = 0.02, 16, 512 * 1024
#: ... then small ones: 2 MB each for the baseline (whose blocking send() wrote the large frames
#: only partly), a few for Tidings (already cut off by its 1 MiB outbox; each publish is a commit).
SMALL_FILL_SIZE, SMALL_FILL_NAIVE, SMALL_FILL_TIDINGS = 1000, 2000, 10
#: Page loads measured while the sockets are open (scenario P), and in parallel.
PAGE_LOADS, PAGE_CONCURRENCY = 200, 4


@dataclass
class Session:
    """One server with N connected clients, and what every scenario on it found."""

    kind: str
    n: int
    workers: int
    server: Server
    clients: Clients
    specs: list[Spec]
    uids: list[int]
    cookies: dict[int, str]
    base: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> int:
        return sum(not s.stalled for s in self.specs)


def _quiet_post(server: Server, path: str, body: dict, timeout: float) -> None:
    try:
        server.post(path, body, timeout=timeout)
    except requests.RequestException:
        pass  # the baseline never answers once a send blocked: that is what we measure


def publish_at_rate(server: Server, rate: float, seconds: float, size: int,
                    patient: bool = True) -> float:
    """POST one broadcast every 1/rate s, each from its own thread, so a stuck publish (the
    baseline under a stall) delays nothing else. Returns the schedule's real duration."""
    count = int(rate * seconds)
    pool = ThreadPoolExecutor(max_workers=min(count, 128))
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pool.submit(_quiet_post, server, "/bench/broadcast", {"n": 1, "size": size},
                    60.0 if patient else 12.0)
    pool.shutdown(wait=patient)
    return time.monotonic() - start


def _percentiles(lat: list[float]) -> dict[str, float | None]:
    if not lat:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(lat)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max())}


def cpu_snapshot(s: Session) -> dict[str, int]:
    """Machine, server and load-generator CPU ticks, to tell who used the cores in a scenario."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return {"total": sum(values), "idle": values[3] + values[4],
            "server": _cpu_ticks(s.server.worker_pids()), "clients": _cpu_ticks(s.clients.pids())}


def cpu_used(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Share of the machine that was busy, and cores' worth used by the server and the clients."""
    total = max(after["total"] - before["total"], 1)
    wall = total / (os.cpu_count() or 1)  # ticks of one core over the interval
    return {"machine_busy": 1 - (after["idle"] - before["idle"]) / total,
            "server_cores": (after["server"] - before["server"]) / wall,
            "client_cores": (after["clients"] - before["clients"]) / wall,
            "server_cpu_s": (after["server"] - before["server"]) / TICKS}


#: Clock ticks per second (/proc/*/stat's unit).
TICKS = os.sysconf("SC_CLK_TCK")


def post_one_by_one(server: Server, count: int, posters: int, body: dict[str, Any],
                    timeout: float = 120.0) -> dict[str, Any]:
    """``count`` POSTs of one event each from ``posters`` threads on keep-alive connections, back
    to back: how a site publishes (each form submit, each chat message is its own request).

    http.client, not requests: the posters share this process's GIL and must not be the limit.
    """
    numbers = itertools.count()
    address = server.url.removeprefix("http://")
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Bench-Token": TOKEN}
    failures: list[str] = []
    durations: list[float] = []

    def poster() -> None:
        conn = http.client.HTTPConnection(address, timeout=timeout)
        try:
            while next(numbers) < count:
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/bench/broadcast", data, headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        failures.append(str(response.status))
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(type(exc).__name__)
                    conn.close()
                    conn = http.client.HTTPConnection(address, timeout=timeout)
                durations.append(time.perf_counter() - t0)
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=poster, daemon=True) for _ in range(posters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 60)
    seconds = time.monotonic() - start
    return {"posted": count - len(failures), "post_failures": len(failures),
            "post_seconds": seconds, "publish_per_s": (count - len(failures)) / seconds,
            "post_p50_ms": float(np.percentile(durations, 50)) * 1000 if durations else None}


def _server_realtime(server: Server) -> dict[str, Any]:
    try:
        body = requests.get(server.url + "/healthz", timeout=10).json()
    except (requests.RequestException, ValueError):
        return {}
    rt = body.get("realtime") or body.get("checks", {}).get("realtime") or {}
    keys = ("sockets", "cut_offs", "dead_peers", "close_codes", "refused_capacity", "broker")
    return {k: rt[k] for k in keys if k in rt} if isinstance(rt, dict) else {}


def _row(s: Session, scenario: str, rep: dict[str, Any], delivered_span: float | None,
         expected_each: int, **extra: Any) -> dict[str, Any]:
    got = sum(rep["reach"].values()) if scenario != "C" else rep["received"]
    row = {
        "server": s.kind, "scenario": scenario, "n": s.n, "workers": s.workers,
        **_percentiles(rep["lat"]),
        "deliveries_s": (got / delivered_span) if delivered_span else None,
        "delivered": got, "expected": expected_each, "lost": rep["lost"], "dup": rep["dup"],
        "healthy_lossy": rep["healthy_lossy"], "healthy_disconnected": rep["healthy_disconnected"],
        "client_close_codes": rep["close_codes"], **s.base, **extra,
    }
    if extra.get("server_cpu_s") is not None and got:
        # Everything the server did for these deliveries: requests, store, broker, fan-out.
        row["server_us_per_delivery"] = extra["server_cpu_s"] / got * 1e6
    if s.kind == "tidings":
        row["server_realtime"] = _server_realtime(s.server)
    if s.workers > 1:
        row["sockets_per_worker"] = rep["workers"]
    return row


def start_server(kind: str, n: int, directory: Path, workers: int = 1,
                 redis: bool = False, extra: dict[str, str] | None = None) -> Server:
    if kind == "tidings":
        return start_tidings(directory, n, workers=workers, redis=redis, extra=extra)
    if kind == "ref":
        return start_ref(directory)
    return start_naive(directory, n)


def open_session(kind: str, n: int, directory: Path, workers: int = 1, redis: bool = False,
                 stalled_share: float = 0.0) -> Session:
    server = start_server(kind, n, directory, workers, redis)
    try:
        if kind == "tidings":
            db_url = server.env["DATABASE_URL"]
            uids = create_users(db_url, n)
            cookies = session_cookies(db_url, uids)
        else:
            uids, cookies = list(range(1, n + 1)), {}
        # One publish first, so the broker, dispatcher and reactor threads exist before "before".
        server.post("/bench/broadcast", {"n": 1, "size": 16})
        time.sleep(0.5)
        before = server.proc_stats()
        stalled = set(random.Random(7).sample(range(n), int(n * stalled_share)))
        specs = []
        for i, uid in enumerate(uids):
            # As the browser does: its own stream, everyone's, its role's (bench users: "user").
            streams = (f"user:{uid}", "broadcast", "role:user")
            specs.append(Spec(i, uid, cookies.get(uid, ""), streams, i in stalled))
        clients = Clients(server.ws_url, server.url)
    except BaseException:
        server.stop()
        raise
    session = Session(kind, n, workers, server, clients, specs, uids, cookies)
    try:
        cpu_before = server.cpu_seconds()
        conn = clients.connect(specs)
        connect_cpu = server.cpu_seconds() - cpu_before
        time.sleep(1.0)
        after = server.proc_stats()
        opened = max(conn["connected"], 1)
        session.base = {
            "connected": conn["connected"], "connect_failed": conn["failed"],
            "connect_errors": conn["errors"], "connect_per_s": conn["connected"] / conn["seconds"],
            "connect_cpu_us": connect_cpu / opened * 1e6,
            "rss_mb": after["rss_kb"] / 1024, "rss_before_mb": before["rss_kb"] / 1024,
            "kb_per_conn": (after["rss_kb"] - before["rss_kb"]) / opened,
            "threads": after["threads"], "threads_before": before["threads"],
            "threads_per_socket": (after["threads"] - before["threads"]) / opened,
        }
        print(f"  [{kind} N={n} w={workers}] connected {conn['connected']}/{n} in "
              f"{conn['seconds']:.1f}s ({session.base['connect_per_s']:.0f}/s, server "
              f"{session.base['connect_cpu_us']:.0f} µs CPU each), failed {conn['failed']} "
              f"{conn['errors'][:2]}", flush=True)
    except BaseException:
        close_session(session)
        raise
    return session


def close_session(s: Session) -> list[str]:
    try:
        s.clients.close()
    finally:
        s.server.stop()
    return s.server.log_problems()


def scenario_a(s: Session, label: str = "A") -> dict[str, Any]:
    """Broadcast at RATE/s for SECONDS to everyone; latency, loss, duplicates."""
    s.clients.reset()
    first = s.server.head() + 1
    patient = not (s.kind == "naive" and label == "S")
    cpu_before = cpu_snapshot(s)
    publish_at_rate(s.server, RATE, SECONDS, SIZE, patient=patient)
    if not patient:
        time.sleep(0.5)
    last = s.server.head()
    count = last - first + 1
    s.clients.wait_for(s.healthy * count, timeout=15.0 if patient else 10.0, idle=3.0)
    cpu = cpu_used(cpu_before, cpu_snapshot(s))
    rep = s.clients.report({"broadcast": list(range(first, last + 1))})
    span = (rep["last_recv"] - rep["first_ts"]) if rep["first_ts"] else None
    reach = [rep["reach"].get(i, 0) / max(s.healthy, 1) for i in range(first, last + 1)]
    return _row(s, label, rep, span, count, broadcasts=count, **cpu,
                healthy_reach_mean=float(np.mean(reach)) if reach else None,
                broadcasts_reaching_all=sum(r >= 1.0 for r in reach))


def scenario_b(s: Session, profile_to: Path | None = None) -> dict[str, Any]:
    """The headline: POSTED broadcasts back to back, one per HTTP request, from POSTERS
    concurrent posters; deliveries/s end to end and the latency of each delivery."""
    s.clients.reset()
    first = s.server.head() + 1
    spies = _start_profilers(s.server, profile_to) if profile_to else []
    try:
        cpu_before = cpu_snapshot(s)
        posted = post_one_by_one(s.server, POSTED, POSTERS, {"n": 1, "size": SIZE})
        last = s.server.head()
        s.clients.wait_for(s.healthy * (last - first + 1), timeout=180.0, idle=5.0)
        cpu = cpu_used(cpu_before, cpu_snapshot(s))
    finally:
        _stop_profilers(spies)
    rep = s.clients.report({"broadcast": list(range(first, last + 1))})
    span = (rep["last_recv"] - rep["first_ts"]) if rep["first_ts"] else None
    return _row(s, "B", rep, span, last - first + 1, last_delivery_s=span, posters=POSTERS,
                **posted, **cpu)


def scenario_b500(s: Session, profile_to: Path | None = None) -> dict[str, Any]:
    """Batched, synthetic: BURST broadcasts published by ONE request (no form or chat message
    publishes this way; the baseline must still send them one by one)."""
    s.clients.reset()
    first = s.server.head() + 1
    spies = _start_profilers(s.server, profile_to) if profile_to else []
    try:
        cpu_before = cpu_snapshot(s)
        t0 = time.time()
        s.server.post("/bench/broadcast", {"n": BURST, "size": SIZE}, timeout=300)
        publish_s = time.time() - t0
        last = s.server.head()
        s.clients.wait_for(s.healthy * BURST, timeout=180.0, idle=5.0)
        cpu = cpu_used(cpu_before, cpu_snapshot(s))
    finally:
        _stop_profilers(spies)
    rep = s.clients.report({"broadcast": list(range(first, last + 1))})
    span = (rep["last_recv"] - rep["first_ts"]) if rep["first_ts"] else None
    return _row(s, "B500", rep, span, last - first + 1, publish_per_s=BURST / publish_s,
                last_delivery_s=span, **cpu)


def scenario_c(s: Session) -> dict[str, Any]:
    """NOTIFICATIONS notifications, each to one random connected user."""
    s.clients.reset()
    lo, hi = min(s.uids), max(s.uids)
    assert hi - lo + 1 == len(s.uids), "bench users are expected to have consecutive ids"
    t0 = time.time()
    sent = s.server.post("/bench/notify", {"n": NOTIFICATIONS, "size": SIZE, "random": [lo, hi]},
                         timeout=300)["sent"]
    publish_s = time.time() - t0
    expected: dict[str, list[int]] = {}
    for uid, seq in sent:
        expected.setdefault(f"user:{uid}", []).append(seq)
    s.clients.wait_for(len(sent), timeout=120.0, idle=5.0)
    rep = s.clients.report(expected)
    span = (rep["last_recv"] - rep["first_ts"]) if rep["first_ts"] else None
    return _row(s, "C", rep, span, len(sent), publish_per_s=len(sent) / publish_s)


def scenario_s_fill(s: Session) -> None:
    """Wedge every stalled client as PEERS.md describes: large messages to it alone until a send
    blocks, then small ones until that blocks too. Tidings gets them in one request per phase
    (its publishes are sequential SQLite transactions; 20 concurrent 8 MB fills hit "database is
    locked" in the first version of this bench); the baseline needs one request per stalled user,
    because each of its requests hangs for good at the first full socket."""
    stalled = [spec.user for spec in s.specs if spec.stalled]
    if s.kind in ("tidings", "ref"):  # neither blocks a request on a full socket
        s.server.post("/bench/notify", {"users": stalled, "n": len(stalled) * FILL_COUNT,
                                        "size": FILL_SIZE}, timeout=300)
        s.server.post("/bench/notify", {"users": stalled, "n": len(stalled) * SMALL_FILL_TIDINGS,
                                        "size": SMALL_FILL_SIZE}, timeout=300)
    else:
        for count, size in ((FILL_COUNT, FILL_SIZE), (SMALL_FILL_NAIVE, SMALL_FILL_SIZE)):
            pool = ThreadPoolExecutor(max_workers=max(len(stalled), 1))
            for uid in stalled:
                pool.submit(_quiet_post, s.server, "/bench/notify",
                            {"users": [uid], "n": count, "size": size}, 8.0)
            pool.shutdown(wait=True)  # each either finished or is stuck in the server for good
    time.sleep(3.0)  # let the server push what it can; the kernel buffers are full by now


def scenario_p(s: Session) -> dict[str, Any]:
    """GET / as a logged-in user while every socket is open and broadcasts flow at RATE/s."""
    uid = s.uids[0]
    headers = {"Cookie": s.cookies[uid], "User-Agent": USER_AGENT}
    stop = threading.Event()

    def background() -> None:
        i = 0
        start = time.monotonic()
        while not stop.is_set() and i < 2000:
            _quiet_post(s.server, "/bench/broadcast", {"n": 1, "size": SIZE}, 30.0)
            i += 1
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def load(_: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        try:
            status = requests.get(s.server.url + "/", headers=headers, timeout=30,
                                  allow_redirects=False).status_code
        except requests.RequestException:
            status = 0
        return (time.perf_counter() - t0) * 1000.0, status

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(PAGE_CONCURRENCY) as pool:
            results = list(pool.map(load, range(PAGE_LOADS)))
    finally:
        stop.set()
        thread.join(timeout=35)
    times = [t for t, status in results if status == 200]
    statuses: dict[str, int] = {}
    for _, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    pct = _percentiles(times)
    return {"server": s.kind, "scenario": "P", "n": s.n, "workers": s.workers,
            "page_p50_ms": pct["p50_ms"], "page_p99_ms": pct["p99_ms"],
            "page_max_ms": pct["max_ms"], "page_statuses": statuses, **s.base}


def scenario_pub(kind: str, directory: Path, workers: int = 1,
                 redis: bool = False) -> dict[str, Any]:
    """Server CPU per publish request (HTTP + store + broker), no socket open: PUB_COUNT POSTs of
    one broadcast each from PUB_POSTERS posters. Tidings' worker also times each step of the
    path in CPU time (``BENCH_TIMERS=1``, bench/server.py)."""
    timed = kind == "tidings"
    server = start_server(kind, 0, directory, workers, redis,
                          extra={"BENCH_TIMERS": "1"} if timed else None)
    try:
        server.post("/bench/broadcast", {"n": 1, "size": 16})  # threads, pools and caches warm
        time.sleep(0.5)
        if timed:
            server.post("/bench/timers/reset", {})
        before = server.cpu_seconds()
        posted = post_one_by_one(server, PUB_COUNT, PUB_POSTERS, {"n": 1, "size": SIZE})
        cpu = server.cpu_seconds() - before
        timers = requests.get(server.url + "/bench/timers", timeout=30,
                              headers={"X-Bench-Token": TOKEN}).json() if timed else {}
    finally:
        server.stop()
    count = max(posted["posted"], 1)
    steps = [(name, t["calls"] / count, t["cpu_s"] / count * 1e6) for name, t in timers.items()
             if t["calls"] >= count // 2]  # the publish path's steps, not the odd request
    return {"server": kind, "scenario": "PUB", "n": 0, "workers": workers, **posted,
            "server_cpu_s": cpu, "server_us_per_publish": cpu / count * 1e6,
            "publish_steps": sorted(steps, key=lambda x: -x[2])}


def _wait_for_new_workers(server: Server, old: set[int], deadline: float) -> None:
    """Until /healthz is answered by a worker that is not one of ``old`` (a reload is done)."""
    while time.monotonic() < deadline:
        try:
            body = requests.get(server.url + "/healthz", timeout=2).json()
            rt = body.get("realtime") or body.get("checks", {}).get("realtime") or {}
            pid = int(str(rt.get("worker", "")).rsplit(":", 1)[-1] or 0)
            if pid and pid not in old:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError("no new worker answered after the reload")


def scenario_storm(s: Session, directory: Path, mode: str = "restart") -> dict[str, Any]:
    """Reconnect storm: SIGTERM the server (its workers close every socket with 1001), start it
    again on the same address and database, and let every client come back as the browser does
    (jitter, backoff, ``/ws/check`` after a refused handshake) and resume with ``after``.
    ``mode="hup"``: a reload instead (SIGHUP: gunicorn starts new workers and SIGTERMs the old;
    the listening socket stays open, so reconnects wait in its backlog instead of failing).

    Broadcasts are published all along from outside the server (this process, as a job queue
    or cron would: stored in the log, announced to whichever workers listen), also while it is
    down; every one must reach every client. Pages are loaded all along as well.
    """
    assert s.kind == "tidings"
    server = s.server
    port, db_url = server.port, server.env["DATABASE_URL"]
    s.clients.reset()
    s.clients.reconnecting(True)
    first = server.head() + 1
    stop = threading.Event()
    published: list[int] = []
    pages: list[tuple[float, float, int]] = []  # (start, ms, status)
    headers = {"Cookie": s.cookies[s.uids[0]], "User-Agent": USER_AGENT}

    def publisher() -> None:
        from app.extensions import realtime

        app = signing_app(db_url)
        with app.app_context():
            start = time.monotonic()
            for i in range(100_000):
                if stop.is_set():
                    return
                published.append(realtime.broadcast("bench", {"i": i, "pad": "x" * SIZE})[0].seq)
                delay = start + (i + 1) / STORM_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def pager() -> None:
        while not stop.is_set():
            t0 = time.time()
            try:
                status = requests.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=30,
                                      allow_redirects=False).status_code
            except requests.RequestException:
                status = 0
            pages.append((t0, (time.time() - t0) * 1000.0, status))
            if status == 0:
                time.sleep(0.1)  # the server is down: do not spin

    threads = [threading.Thread(target=publisher, daemon=True)]
    threads += [threading.Thread(target=pager, daemon=True) for _ in range(PAGE_CONCURRENCY)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    handshakes_before = s.clients.readiness(0.0)["connects"]
    old_workers = set(server.worker_pids())
    t_kill = time.time()
    cpu_before = cpu_snapshot(s)
    if mode == "hup":
        os.kill(server.pid, signal.SIGHUP)
        new = server
        _wait_for_new_workers(server, old_workers, deadline=time.monotonic() + 120)
    else:
        server.stop(timeout=15)
        # Generous: a master boots while every client knocks at its port (and the machine may be
        # shared); the figure that counts starts when the new workers answer.
        new = start_tidings(directory, s.n, workers=s.workers, port=port, migrate=False,
                            start_timeout=180.0)
        s.server = new
    t_ready = time.time()
    print(f"    new workers ready {t_ready - t_kill:.1f}s after the signal", flush=True)
    deadline = time.monotonic() + STORM_TIMEOUT
    state = s.clients.readiness(t_kill)
    while time.monotonic() < deadline and state["ready"] < state["peers"] - state["stopped"]:
        time.sleep(0.5)
        state = s.clients.readiness(t_kill)
    t_all = state["last"] if state["ready"] else time.time()
    if state["times"]:
        # /healthz is polled; a client may get in first: then the workers were ready earlier.
        t_ready = min(t_ready, state["times"][0])
    time.sleep(2.0)  # a little live traffic after everyone is back
    stop.set()
    for thread in threads:
        thread.join(timeout=40)
    last = new.head()
    expected = list(range(first, last + 1))
    s.clients.wait_for(s.healthy * len(expected), timeout=60.0, idle=5.0)
    cpu = cpu_used(cpu_before, cpu_snapshot(s))
    rep = s.clients.report({"broadcast": expected})
    s.clients.reconnecting(False)
    during = [ms for t0, ms, status in pages if t_ready <= t0 <= t_all and status == 200]
    statuses: dict[str, int] = {}
    for t0, _, status in pages:
        if t0 >= t_ready:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    back = [t - t_ready for t in state["times"]]
    pct = _percentiles(during)
    row = _row(s, "R", rep, None, len(expected), **cpu)
    row.update({
        "storm_mode": mode, "storm_down_s": t_ready - t_kill, "storm_all_back_s": t_all - t_ready,
        "storm_back_p50_s": float(np.percentile(back, 50)) if back else None,
        "storm_resubscribed": state["ready"], "storm_gave_up": state["stopped"],
        "storm_handshakes": state["connects"] - handshakes_before,
        "storm_published": len(published),
        "page_p50_ms": pct["p50_ms"], "page_p99_ms": pct["p99_ms"], "page_max_ms": pct["max_ms"],
        "page_statuses": statuses, "pages_during_storm": len(during),
    })
    return row


# ---------------------------------------------------------------------------- profiling


def handshake_profile(n: int, directory: Path) -> dict[str, Any]:
    """bench/handshake.py's two views: each step alone, and py-spy over a live connect phase."""
    from bench import handshake

    out: dict[str, Any] = {}
    try:
        out["handshake_steps"] = handshake.steps(directory / "steps")
        out["handshake_live"] = handshake.live(n, directory / "live")
    except Exception as exc:  # a profiling problem must not lose the run's figures
        print(f"  !! handshake profile failed: {exc!r}", flush=True)
    return out


def _start_profilers(server: Server, prefix: Path) -> list[subprocess.Popen]:
    """py-spy on the (first) worker: raw collapsed stacks for the table, an SVG flame graph."""
    spy = Path(sys.executable).with_name("py-spy")
    pids = server.worker_pids()
    if not spy.exists() or not pids:
        return []
    procs = []
    for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg")):
        procs.append(subprocess.Popen(
            [str(spy), "record", "--pid", str(pids[0]), "--rate", "100", "--duration", "120",
             "--nonblocking", "--gil", "--format", fmt, "-o", str(prefix) + suffix],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
    time.sleep(1.5)  # attaching takes a moment; start the burst after it
    return procs


def _stop_profilers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def hot_spots(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive share of samples per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread", "process")):
            label = frames.pop(0)
            if frames and frames[0].startswith("thread"):
                label = frames.pop(0)
            threads[label] = threads.get(label, 0) + count
        names = [f.rsplit(":", 1)[0] + ")" if ":" in f and f.endswith(")") else f for f in frames]
        if names:
            own[names[-1]] = own.get(names[-1], 0) + count
        # Thread plumbing is on every stack and says nothing; keep the frames that do work.
        boring = ("threading.py", "concurrent/futures", "gunicorn/workers")
        for name in {x for x in names if not any(b in x for b in boring)}:
            incl[name] = incl.get(name, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:top]]

    return {"total_samples": [("samples", float(total))], "self": ranked(own),
            "inclusive": ranked(incl), "threads": ranked(threads)}


# ---------------------------------------------------------------------------- the plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="N=100 and 1,000 only; the storm at 1,000 sockets")
    parser.add_argument("--only", default="",
                        help="comma list of A,B,B500,C,S,W,P,PUB,R,O (debugging)")
    parser.add_argument("--servers", default="tidings,naive,ref",
                        help="comma list of tidings,naive,ref (debugging)")
    parser.add_argument("--sizes", default="", help="comma list of N, e.g. 300 (debugging)")
    parser.add_argument("--storm", type=int, default=0,
                        help="sockets in the reconnect storm (default 5,000; 1,000 with --quick)")
    parser.add_argument("--storm-workers", type=int, default=1,
                        help="gunicorn workers of the server in the reconnect storm (default 1)")
    parser.add_argument("--storm-modes", default="R,Rhup",
                        help="R (SIGTERM + start again) and/or Rhup (SIGHUP reload), in order")
    parser.add_argument("--report", type=Path, default=None,
                        help="only write RESULTS.md and latest.png again from a saved run's JSON")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        write_outputs(saved["rows"], saved["profile"], saved["log_problems"], saved["machine"],
                      args.report)
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    want = set((args.only or "A,B,B500,C,S,W,P,PUB,R").split(","))
    kinds = [k for k in ("tidings", "naive", "ref") if k in args.servers.split(",")]
    sizes = [100, 1000] if args.quick else [100, 1000, 2000, 5000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    middle = 1000 if 1000 in sizes else sizes[-1]  # where B, C and the profile run
    page_at = {middle} if args.quick or args.sizes else {2000, 5000}
    storm_n = args.storm or (1000 if args.quick else 5000)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    problems: dict[str, list[str]] = {}
    profile: dict[str, Any] = {}
    started = time.time()

    def run(kind: str, n: int, tag: str, steps: list[str], **kw: Any) -> None:
        print(f"== {tag}", flush=True)
        try:
            s = open_session(kind, n, workdir / tag, **kw)
        except Exception as exc:
            print(f"  !! could not open {tag}: {str(exc)[:300]}", flush=True)
            problems[tag] = [f"session failed: {str(exc)[:2000]}"]
            return
        if "connect" in steps:  # the connect itself is the measurement (handshake profile)
            rows.append({"server": kind, "scenario": "connect", "n": n, "workers": s.workers,
                         **s.base})
        try:
            for step in steps:
                print(f"  - {step}", flush=True)
                if step == "A":
                    rows.append(scenario_a(s))
                elif step == "B":
                    rows.append(scenario_b(s))
                elif step == "B500":
                    rows.append(scenario_b500(s))
                elif step == "Bprof":
                    prefix = workdir / "profile-B"
                    scenario_b(s, profile_to=prefix)
                    raw = Path(str(prefix) + ".txt")
                    if raw.exists():
                        profile.update(hot_spots(raw))
                        profile["files"] = [str(raw), str(prefix) + ".svg"]
                elif step == "C":
                    rows.append(scenario_c(s))
                elif step == "S":
                    scenario_s_fill(s)
                    rows.append(scenario_a(s, label="S"))
                elif step == "P":
                    rows.append(scenario_p(s))
                elif step in ("R", "Rhup"):
                    rows.append(scenario_storm(s, workdir / tag,
                                               "hup" if step == "Rhup" else "restart"))
                if rows and step not in ("connect", "Bprof"):
                    print("    " + _brief(rows[-1]), flush=True)
        except Exception as exc:
            print(f"  !! {tag} failed: {repr(exc)[:300]}", flush=True)
            problems.setdefault(tag, []).append(f"scenario failed: {repr(exc)[:2000]}")
        finally:
            found = close_session(s)
            if found:
                problems.setdefault(tag, []).extend(found[:40])
                print(f"  log: {len(found)} problem lines (first: {found[0][:160]})", flush=True)

    if "PUB" in want:
        for kind in kinds:
            print(f"== {kind}-publish", flush=True)
            try:
                rows.append(scenario_pub(kind, workdir / f"{kind}-publish"))
                print("    " + _brief(rows[-1]), flush=True)
            except Exception as exc:
                problems[f"{kind}-publish"] = [f"scenario failed: {exc!r}"]
    for n in sizes:
        for kind in kinds:
            steps = [x for x in ["A"] if x in want]
            if n == middle:
                steps += [x for x in ("B", "B500") if x in want]
                if kind == "tidings":
                    steps += [x for x in ("C",) if x in want]
                    if "B" in want:
                        steps.append("Bprof")
            if kind == "tidings" and n in page_at and "P" in want:
                steps.append("P")  # the others have no site pages to load
            if steps:
                run(kind, n, f"{kind}-{n}", steps)
    if "tidings" in kinds and {"A", "B"} & want:
        # The handshake profile: py-spy over the whole connect phase of a fresh session.
        print("== tidings handshake profile", flush=True)
        profile.update(handshake_profile(middle, workdir / "handshake"))
    if "S" in want:
        for kind in kinds:
            run(kind, middle, f"{kind}-{middle}-stalled", ["S"], stalled_share=STALLED_SHARE)
    if "W" in want and "tidings" in kinds:
        for n in ([middle] if args.quick or args.sizes else [1000, 2000]):
            steps = ["A", "B", "B500"] if n == middle else ["A"]
            run("tidings", n, f"tidings-{n}-w2-redis", steps, workers=2, redis=True)
    if "R" in want and "tidings" in kinds:
        # A restart (the port closed while the new master boots: clients back off), then a
        # reload on the same clients (SIGHUP: the port stays open, new workers take over).
        run("tidings", storm_n, f"tidings-{storm_n}-storm", args.storm_modes.split(","),
            workers=args.storm_workers)

    if not args.only or "O" in want:  # out-of-process publish latency, w=1 and w=2 (issue 15)
        rows.extend(outofprocess.rows(workdir / "outofprocess"))

    machine = {"nproc": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "mode": "quick" if args.quick else "full",
               "command": ".venv/bin/python -m bench" + (" --quick" if args.quick else ""),
               "seconds": round(time.time() - started, 1), "stamp": stamp,
               "load": os.getloadavg(), "git": _git_state()}
    if args.only or args.sizes or args.servers != "tidings,naive,ref":
        machine["mode"] += " (partial: " + " ".join(argv or sys.argv[1:]) + ")"
    write_outputs(rows, profile, problems, machine, RESULTS / f"{stamp}.json")
    return 0


def _git_state() -> str:
    """HEAD plus whether flask_tidings had uncommitted edits: the numbers belong to that tree."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "flask_tidings"], cwd=ROOT, text=True,
                               capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted edits in flask_tidings" if dirty else "")


def _brief(row: dict[str, Any]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    if row["scenario"] == "P":
        return (f"P page p50={fmt(row['page_p50_ms'])} p99={fmt(row['page_p99_ms'])} "
                f"{row['page_statuses']}")
    if row["scenario"] == "PUB":
        return (f"PUB {row['server']} {row['publish_per_s']:.0f} publishes/s, server "
                f"{row['server_us_per_publish']:.0f} µs CPU each, failures {row['post_failures']}")
    if row["scenario"] == "R":
        return (f"R down {fmt(row['storm_down_s'])}s, all back {fmt(row['storm_all_back_s'])}s "
                f"after ready ({row['storm_resubscribed']}/{row['connected']}), lost={row['lost']} "
                f"dup={row['dup']} published={row['storm_published']} pages p99="
                f"{fmt(row['page_p99_ms'])} {row['page_statuses']}")
    return (f"{row['scenario']} {row['server']} N={row['n']} p50={fmt(row['p50_ms'])} "
            f"p99={fmt(row['p99_ms'])} max={fmt(row['max_ms'])} deliv/s={fmt(row['deliveries_s'])} "
            f"lost={row['lost']} dup={row['dup']} reach={row.get('healthy_reach_mean')}")


if __name__ == "__main__":
    raise SystemExit(main())
