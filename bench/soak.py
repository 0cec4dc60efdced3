"""Soak: N users, random traffic and random reconnects; nothing may be lost or arrive twice.

    .venv/bin/python -m bench.soak --minutes 2 --users 100

The real site (2 gunicorn workers + the local Redis, bench/servers.py) and N bench users with
signed session cookies (bench/users.py). Each user holds one socket following ``user:<id>`` and
``broadcast``, and keeps a cursor per stream (the last id it saw) and every (stream, id) it got.
For ``--minutes``: notifications to random users and broadcasts (bench/server.py's in-worker
endpoints: the path a view takes), while clients are cut at random (a clean close, or the TCP
connection dropped) and come back after a moment with ``subscribe ... after=<cursor>``.

After a drain, every client's received ids are compared with the durable log itself (the
``realtime_events`` rows of its streams after the cursor it started at, read from the SQLite
file). Exit status 1 if any client missed or doubled an event. Loopback only, bounded in time;
the server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.loadgen import USER_AGENT
from bench.servers import TOKEN, Server, start_tidings
from bench.users import create_users, session_cookies

#: Per second during the run: notify requests (each to 1..NOTIFY_BATCH random users),
#: broadcasts, and client cuts.
NOTIFY_RATE, NOTIFY_BATCH, BROADCAST_RATE, CUT_RATE = 20.0, 5, 3.0, 2.0
#: A cut client waits this long (uniform, seconds) before it reconnects.
RECONNECT_DELAY = (0.05, 1.5)
#: Longest wait, after the traffic stops, for every client to catch up with the log.
DRAIN_TIMEOUT = 60.0


@dataclass
class Soaker:
    """One user's socket, cursors and everything it received."""

    user: int
    cookie: str
    streams: tuple[str, ...]
    start: dict[str, int]
    cursor: dict[str, int] = field(default_factory=dict)
    got: Counter = field(default_factory=Counter)
    out_of_order: int = 0  # ids at or below the cursor on arrival (a repeat, or a step back)
    connects: int = 0
    refused: int = 0
    closes: Counter = field(default_factory=Counter)
    ws: ClientConnection | None = None
    online: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.cursor = dict(self.start)


async def run_client(c: Soaker, url: str, origin: str, stop: asyncio.Event) -> None:
    """Connect, resume every stream from its cursor, read until cut; again until ``stop``."""
    while not stop.is_set():
        try:
            async with connect(url, origin=origin, user_agent_header=USER_AGENT,
                               additional_headers={"Cookie": c.cookie}, compression=None,
                               ping_interval=None, max_size=None, open_timeout=20,
                               proxy=None) as ws:
                c.ws = ws
                c.connects += 1
                pending = set(c.streams)
                async for raw in ws:
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "welcome":
                        for stream in c.streams:
                            await ws.send(json.dumps({"type": "subscribe", "stream": stream,
                                                      "after": c.cursor[stream], "ref": stream}))
                    elif kind == "subscribed":
                        pending.discard(msg["stream"])
                        if not pending:
                            c.online.set()
                    elif kind == "error":
                        raise RuntimeError(f"user {c.user}: {msg}")
                    elif "id" in msg and msg.get("stream") in c.cursor:
                        stream, seq = msg["stream"], int(msg["id"])
                        c.got[(stream, seq)] += 1
                        if seq <= c.cursor[stream]:
                            c.out_of_order += 1
                        else:
                            c.cursor[stream] = seq
        except InvalidStatus as exc:  # 429/503 while the server is busy: back off and retry
            c.refused += 1
            c.closes[f"http-{exc.response.status_code}"] += 1
            await asyncio.sleep(0.5)
            continue
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            rcvd = getattr(exc, "rcvd", None)
            c.closes[str(rcvd.code) if rcvd else type(exc).__name__] += 1
        else:
            c.closes["closed"] += 1
        finally:
            c.ws = None
            c.online.clear()
        if not stop.is_set():
            await asyncio.sleep(random.uniform(*RECONNECT_DELAY))


async def cut(c: Soaker) -> str:
    """Drop a client's connection: a clean close half the time, the TCP connection otherwise."""
    ws = c.ws
    if ws is None:
        return "offline"
    if random.random() < 0.5:
        await ws.close()
        return "close"
    ws.transport.abort()
    return "abort"


async def traffic(server: Server, clients: list[Soaker], seconds: float,
                  pool: ThreadPoolExecutor) -> dict[str, int]:
    """Random notify/broadcast/cut events as a Poisson-ish stream until ``seconds`` pass."""
    loop = asyncio.get_running_loop()
    users = [c.user for c in clients]
    counts: Counter = Counter()
    inflight: set[asyncio.Future] = set()
    total = NOTIFY_RATE + BROADCAST_RATE + CUT_RATE
    deadline = time.monotonic() + seconds

    def post(path: str, body: dict) -> None:
        try:
            server.post(path, body, timeout=60)
            counts[path + " ok"] += 1
        except requests.RequestException:
            counts[path + " failed"] += 1

    while time.monotonic() < deadline:
        await asyncio.sleep(random.expovariate(total))
        pick = random.uniform(0, total)
        if pick < NOTIFY_RATE:
            chosen = random.sample(users, random.randint(1, NOTIFY_BATCH))
            fut = loop.run_in_executor(pool, post, "/bench/notify",
                                       {"n": len(chosen), "users": chosen, "size": 32})
            inflight.add(fut)
            fut.add_done_callback(inflight.discard)
        elif pick < NOTIFY_RATE + BROADCAST_RATE:
            fut = loop.run_in_executor(pool, post, "/bench/broadcast", {"n": 1, "size": 32})
            inflight.add(fut)
            fut.add_done_callback(inflight.discard)
        else:
            counts["cut " + await cut(random.choice(clients))] += 1
    if inflight:
        await asyncio.gather(*inflight)
    return dict(counts)


def log_heads(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("SELECT name, last_seq FROM realtime_streams").fetchall())


def expected_ids(db_path: Path, c: Soaker) -> set[tuple[str, int]]:
    """What the durable log says this client should have seen: every stored event of its
    streams after the cursor it started at."""
    out: set[tuple[str, int]] = set()
    with sqlite3.connect(db_path) as conn:
        for stream in c.streams:
            rows = conn.execute(
                "SELECT seq FROM realtime_events WHERE stream = ? AND seq IS NOT NULL AND seq > ?",
                (stream, c.start[stream])).fetchall()
            out.update((stream, int(seq)) for (seq,) in rows)
    return out


async def drain(db_path: Path, clients: list[Soaker], timeout: float) -> float:
    """Wait until every client is online and its cursors reach the log's heads."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        heads = log_heads(db_path)
        if all(c.online.is_set() and all(c.cursor[s] >= heads.get(s, 0) for s in c.streams)
               for c in clients):
            return time.monotonic() - start
        await asyncio.sleep(0.25)
    return float("nan")


async def sample_rss(server: Server, every: float, curve: list[tuple[float, int]],
                     stop: asyncio.Event) -> None:
    """The workers' summed RSS (kB) every ``every`` seconds: a leak shows as a slope."""
    started = time.monotonic()
    while not stop.is_set():
        curve.append((round(time.monotonic() - started, 1), server.proc_stats()["rss_kb"]))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


def rss_slope(curve: list[tuple[float, int]], warm_up: float) -> float | None:
    """Least-squares slope of RSS after ``warm_up`` seconds, in MB per minute."""
    points = [(t, kb) for t, kb in curve if t >= warm_up]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_kb = sum(kb for _, kb in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    slope_kb_per_s = sum((t - mean_t) * (kb - mean_kb) for t, kb in points) / var
    return round(slope_kb_per_s * 60 / 1024, 3)


async def sample_memory(server: Server, every: float, reports: list[dict[str, Any]],
                        stop: asyncio.Event) -> None:
    """``--memory``: bench/server.py's ``/bench/memory`` every ``every`` seconds; with
    ``--trace`` what grew since the previous report is printed as it comes, so a long run can be
    read live."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    def get() -> dict[str, Any]:
        response = requests.get(server.url + "/bench/memory", timeout=120,
                                headers={"X-Bench-Token": TOKEN})
        response.raise_for_status()
        return response.json()

    while not stop.is_set():
        try:
            report = await loop.run_in_executor(None, get)
        except requests.RequestException as exc:
            print(f"  memory: {exc}", flush=True)
        else:
            report["t"] = round(time.monotonic() - started, 1)
            reports.append(report)
            print(f"  memory at {report['t'] / 60:.1f} min (pid {report['pid']}): traced "
                  f"{report.get('traced_kb')} kB, malloc {report['malloc']}, "
                  f"maps {report['maps']}, "
                  f"sqlite {report.get('sqlite_kb')} kB, pool {report.get('pool')}, "
                  f"threads {report.get('threads')}",
                  flush=True)
            for site in report.get("sites", [])[:8]:
                print(f"    +{site['kb']} kB in {site['count']} blocks: "
                      + " < ".join(reversed(site["where"])), flush=True)
            if report.get("objects"):
                print(f"    objects: {report['objects']}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def soak(server: Server, db_path: Path, cookies: dict[int, str], minutes: float,
               settle: float, rss_every: float = 30.0, memory: bool = False
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    heads = log_heads(db_path)
    clients = [Soaker(uid, cookie, (f"user:{uid}", "broadcast"),
                      {f"user:{uid}": heads.get(f"user:{uid}", 0),
                       "broadcast": heads.get("broadcast", 0)})
               for uid, cookie in cookies.items()]
    url = server.url.replace("http://", "ws://") + "/ws"
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_client(c, url, server.url, stop)) for c in clients]
    curve: list[tuple[float, int]] = []
    tasks.append(asyncio.create_task(sample_rss(server, rss_every, curve, stop)))
    memory_reports: list[dict[str, Any]] = []
    if memory:
        tasks.append(asyncio.create_task(sample_memory(server, rss_every, memory_reports, stop)))
    try:
        await asyncio.wait_for(asyncio.gather(*(c.online.wait() for c in clients)), 60)
        print(f"  {len(clients)} clients online; traffic for {minutes:g} min", flush=True)
        with ThreadPoolExecutor(max_workers=16) as pool:
            started = time.monotonic()
            cpu_before = server.cpu_seconds()
            counts = await traffic(server, clients, minutes * 60, pool)
            ran = time.monotonic() - started
            cpu = server.cpu_seconds() - cpu_before
        # Let the last cut clients come back before asking whether they caught up.
        await asyncio.sleep(RECONNECT_DELAY[1] + settle)
        drained = await drain(db_path, clients, DRAIN_TIMEOUT)
    finally:
        stop.set()
        for c in clients:
            if c.ws is not None:
                await c.ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    rows = []
    for c in clients:
        want = expected_ids(db_path, c)
        got = set(c.got)
        rows.append({
            "user": c.user, "expected": len(want), "received": sum(c.got.values()),
            "missing": len(want - got), "duplicated": sum(n - 1 for n in c.got.values()),
            "unexpected": len(got - want), "out_of_order": c.out_of_order,
            "connects": c.connects, "refused": c.refused, "closes": dict(c.closes),
        })
    # Warm-up: the first fifth of the run (at least a minute) fills caches and pools.
    warm_up = max(60.0, ran / 5)
    summary = {"seconds": round(ran, 1), "drain_s": round(drained, 2), "traffic": counts,
               "rss_curve_kb": curve, "rss_warm_up_s": warm_up,
               "rss_slope_mb_per_min": rss_slope(curve, warm_up), "memory": memory_reports,
               "server_cpu_s": round(cpu, 1)}
    for key in ("expected", "received", "missing", "duplicated", "unexpected", "out_of_order",
                "connects", "refused"):
        summary[key] = sum(r[key] for r in rows)
    # Everything the workers did while the traffic ran (requests, fan-out, reconnects, sweeps),
    # per event received: to compare settings (a malloc tunable) on the same traffic.
    summary["server_cpu_us_per_delivery"] = round(cpu / max(summary["received"], 1) * 1e6, 1)
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the server's folder")
    parser.add_argument("--rss-every", type=float, default=30.0,
                        help="seconds between RSS samples (and --memory reports)")
    parser.add_argument("--memory", action="store_true",
                        help="print where a worker's memory is (glibc heap, maps, SQLite) with "
                             "each RSS sample (BENCH_MEMORY=1); clearest with --workers 1")
    parser.add_argument("--trace", action="store_true",
                        help="with --memory: trace allocations too (slower) and print what grew")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 60 or not 0 < args.users <= 2000:
        parser.error("--minutes is in (0, 60] and --users in (0, 2000]")
    random.seed(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="tidings-soak-"))
    db_path = workdir / "bench.db"
    print(f"== soak: {args.users} users, {args.workers} workers + Redis, "
          f"{args.minutes:g} min (folder {workdir})", flush=True)
    extra = {"BENCH_MEMORY": "trace" if args.trace else "1"} if args.memory else {}
    # Every delivery is checked against the log at the end, so the log must keep every event:
    # at ~3 broadcasts a second an hour passes the default 10,000 per stream, and the events
    # pruned after they were delivered read as "unexpected" (35,400 in a 60-minute run).
    extra["REALTIME_RETENTION_PER_STREAM"] = "0"
    server = start_tidings(workdir, args.users, workers=args.workers, redis=True, extra=extra)
    try:
        db_url = server.env["DATABASE_URL"]
        cookies = session_cookies(db_url, create_users(db_url, args.users, prefix="soak"))
        rows, summary = asyncio.run(soak(server, db_path, cookies, args.minutes, settle=1.0,
                                         rss_every=args.rss_every, memory=args.memory))
        problems = server.log_problems()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"  {'user':>6} {'expected':>8} {'received':>8} {'missing':>7} {'dup':>4} "
          f"{'connects':>8}  closes")
    for r in rows:
        print(f"  {r['user']:>6} {r['expected']:>8} {r['received']:>8} {r['missing']:>7} "
              f"{r['duplicated']:>4} {r['connects']:>8}  {r['closes']}")
    print(f"  total: expected {summary['expected']}, received {summary['received']}, "
          f"missing {summary['missing']}, duplicated {summary['duplicated']}, "
          f"unexpected {summary['unexpected']}, out of order {summary['out_of_order']}; "
          f"{summary['connects']} connections ({summary['refused']} handshakes refused), "
          f"traffic {summary['seconds']} s, drained in {summary['drain_s']} s")
    print(f"  requests: {summary['traffic']}")
    print(f"  workers' CPU while the traffic ran: {summary['server_cpu_s']} s, "
          f"{summary['server_cpu_us_per_delivery']} µs per delivery")
    curve = summary["rss_curve_kb"]
    if curve:
        print("  workers' RSS (MB) over time: " + ", ".join(
            f"{t / 60:.1f} min {kb / 1024:.1f}" for t, kb in curve))
        print(f"  RSS slope after {summary['rss_warm_up_s'] / 60:.1f} min of warm-up: "
              f"{summary['rss_slope_mb_per_min']} MB/min")
    if problems:
        print(f"  server log: {len(problems)} problem lines, first: {problems[0][:200]}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "clients": rows,
                                         "log_problems": problems[:50]}, indent=1))
    bad = summary["missing"] or summary["duplicated"] or summary["unexpected"]
    print("  RESULT:", "FAIL" if bad else "OK", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
