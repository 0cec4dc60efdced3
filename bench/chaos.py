"""Chaos: a bounded fault campaign, judged by an independent checker.

    .venv/bin/python -m bench.chaos                      # every fault, SQLite + PostgreSQL
    .venv/bin/python -m bench.chaos --faults kill9,hup --users 30 --seconds 12

For each fault, a fresh site (2 gunicorn workers, a redis-server of the campaign's own on a free
port, SQLite or PostgreSQL), N users each following ``user:<id>`` and ``broadcast`` on one socket,
and steady traffic through the workers' publishing endpoint (bench/server.py: the path a view
takes). A third of the way in, the fault; the traffic goes on through it. Then the traffic stops,
every client catches up, and the checker compares what each client received with the durable log
itself (read straight from the database, not through the site): every stored event after the
client's first cursor must have arrived once, in order. A publish the site refused (an error
answer) is not in the log, and so not expected.

The clients reconnect as realtime.js does (jittered backoff, resume from their cursors, retry a
subscribe answered ``unavailable``) and record how long each reconnect took, from the close to
the last stream subscribed again.

Faults:
  kill9       one worker SIGKILLed (gunicorn starts another)
  hup         gunicorn reload (new workers, old ones SIGTERMed)
  redis-kill  Redis killed, back 2 s later
  redis-stop  Redis frozen (SIGSTOP) for 6 s: alive, accepting, answering nothing
  db-lock     SQLite: another process holds the write lock past the busy timeout (16 s)
  db-kills    PostgreSQL: every client cut at once, and the site's database connections
              killed every 50 ms for 4 s while they reconnect

Loopback only; every run is bounded in time and always stops its servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.loadgen import USER_AGENT
from bench.servers import Server, start_tidings
from bench.users import create_users, session_cookies

FAULTS = ("kill9", "hup", "redis-kill", "redis-stop", "db-lock", "db-kills")
#: Per second: notify requests (each to one random user) and broadcasts.
NOTIFY_RATE, BROADCAST_RATE = 12.0, 2.0
#: After the traffic stops: longest wait for every client to catch up with the log.
DRAIN_TIMEOUT = 90.0
ADMIN_DSN = os.environ.get("TIDINGS_TEST_POSTGRES_DSN",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


# ----------------------------------------------------------------------------- Redis of our own


class PrivateRedis:
    """A redis-server on a free port, so killing or freezing it disturbs nobody else."""

    def __init__(self, directory: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=5)


# ----------------------------------------------------------------------------- the clients


@dataclass
class Reader:
    """One user's socket, cursors, what it received and how long its reconnects took."""

    user: int
    cookie: str
    streams: tuple[str, ...]
    start: dict[str, int]
    cursor: dict[str, int] = field(default_factory=dict)
    got: Counter = field(default_factory=Counter)
    out_of_order: int = 0
    resets: int = 0
    unavailable: int = 0
    connects: int = 0
    errors: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    reconnect_s: list[float] = field(default_factory=list)
    closed_at: float | None = None
    ws: ClientConnection | None = None
    online: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.cursor = dict(self.start)


async def read(c: Reader, url: str, origin: str, stop: asyncio.Event) -> None:
    """Connect, resume every stream, read until the connection ends; again until ``stop``."""
    attempt = 0
    while not stop.is_set():
        try:
            async with connect(url, origin=origin, user_agent_header=USER_AGENT,
                               additional_headers={"Cookie": c.cookie}, compression=None,
                               ping_interval=None, max_size=None, open_timeout=20,
                               proxy=None) as ws:
                c.ws = ws
                c.connects += 1
                pending = c.pending = set(c.streams)

                async def subscribe(stream: str, delay: float = 0.0) -> None:
                    await asyncio.sleep(delay)
                    message = {"type": "subscribe", "stream": stream, "ref": stream,
                               "after": c.cursor[stream]}
                    try:
                        await ws.send(json.dumps(message))
                    except ConnectionClosed:
                        pass

                async for raw in ws:
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "welcome":
                        attempt = 0
                        for stream in c.streams:
                            await subscribe(stream)
                    elif kind == "subscribed":
                        pending.discard(msg["stream"])
                        if not pending:
                            if c.closed_at is not None:
                                c.reconnect_s.append(time.monotonic() - c.closed_at)
                                c.closed_at = None
                            c.online.set()
                    elif kind == "error" and msg.get("code") == "unavailable":
                        c.unavailable += 1  # as realtime.js: try that subscribe again later
                        asyncio.ensure_future(subscribe(msg["stream"], random.uniform(0.25, 1)))
                    elif kind == "error":
                        c.errors.append(json.dumps(msg)[:300])  # reported; never expected
                    elif kind == "reset":
                        c.resets += 1
                        c.cursor[msg["stream"]] = int(msg["head"])
                    elif "id" in msg and msg.get("stream") in c.cursor:
                        stream, seq = msg["stream"], int(msg["id"])
                        c.got[(stream, seq)] += 1
                        if seq <= c.cursor[stream]:
                            c.out_of_order += 1
                        else:
                            c.cursor[stream] = seq
        except (InvalidStatus, ConnectionClosed, OSError, TimeoutError):
            pass
        finally:
            c.ws = None
            if c.online.is_set() or c.closed_at is None:
                c.closed_at = time.monotonic()
            c.online.clear()
        if not stop.is_set():
            attempt += 1
            cap = min(20.0, 0.5 * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(0, 1.0) if attempt == 1 else random.uniform(0, cap))


# ----------------------------------------------------------------------------- the log


class Log:
    """The durable log read straight from the database: the checker's only source of truth."""

    #: How the checker's own PostgreSQL connections are told apart (the db-kills fault spares them).
    NAME = "tidings-chaos-checker"

    def __init__(self, url: str):
        args = {"application_name": self.NAME} if url.startswith("postgresql") else {}
        self.engine = create_engine(url, connect_args=args, pool_pre_ping=True)

    def heads(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, last_seq FROM realtime_streams")).all())

    def expected(self, c: Reader) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        with self.engine.connect() as conn:
            for stream in c.streams:
                rows = conn.execute(text(
                    "SELECT seq FROM realtime_events WHERE stream = :s AND seq IS NOT NULL "
                    "AND seq > :after"), {"s": stream, "after": c.start[stream]}).all()
                out.update((stream, int(seq)) for (seq,) in rows)
        return out


# ----------------------------------------------------------------------------- faults


def inject(name: str, server: Server, redis: PrivateRedis, db_url: str,
           readers: list[Reader], loop: asyncio.AbstractEventLoop) -> str:
    """Do the fault (blocking, on a thread); returns what was done."""
    if name == "kill9":
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        return f"SIGKILL worker {victim}"
    if name == "hup":
        os.kill(server.pid, signal.SIGHUP)
        return "SIGHUP the arbiter"
    if name == "redis-kill":
        redis.kill()
        time.sleep(2)
        redis.start()
        return "Redis killed, restarted after 2 s"
    if name == "redis-stop":
        redis.signal(signal.SIGSTOP)
        time.sleep(6)
        redis.signal(signal.SIGCONT)
        return "Redis SIGSTOPped for 6 s"
    if name == "db-lock":
        path = db_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(16)
        conn.execute("ROLLBACK")
        conn.close()
        return "SQLite write lock held 16 s (past the 15 s busy timeout)"
    if name == "db-kills":
        import psycopg

        database = db_url.rsplit("/", 1)[1]
        for c in readers:  # a reconnect storm: every socket cut at once
            ws = c.ws
            if ws is not None:
                loop.call_soon_threadsafe(ws.transport.abort)
        kills = 0
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            end = time.monotonic() + 4
            while time.monotonic() < end:
                kills += len(admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s",
                    (database, Log.NAME)).fetchall())
                time.sleep(0.05)
        return f"all sockets cut; {kills} PostgreSQL connections killed over 4 s"
    raise ValueError(name)


# ----------------------------------------------------------------------------- one run


def postgres_database() -> tuple[str, Any] | None:
    try:
        import psycopg

        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception:
        return None
    name = f"tidings_chaos_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"{url}/{name}", drop


async def campaign_run(fault: str, server: Server, redis: PrivateRedis, db_url: str,
                       cookies: dict[int, str], seconds: float) -> dict[str, Any]:
    log = Log(db_url)
    heads = log.heads()
    readers = [Reader(uid, cookie, (f"user:{uid}", "broadcast"),
                      {f"user:{uid}": heads.get(f"user:{uid}", 0),
                       "broadcast": heads.get("broadcast", 0)})
               for uid, cookie in cookies.items()]
    url = server.url.replace("http://", "ws://") + "/ws"
    stop = asyncio.Event()
    tasks = [asyncio.create_task(read(c, url, server.url, stop)) for c in readers]
    loop = asyncio.get_running_loop()
    counts: Counter = Counter()
    users = list(cookies)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.online.wait() for c in readers)), 60)
        for c in readers:
            c.reconnect_s.clear()

        def post(path: str, body: dict) -> None:
            try:
                server.post(path, body, timeout=60)
                counts["published"] += 1
            except requests.RequestException:
                counts["refused"] += 1  # an error answer: nothing stored, nothing expected

        with ThreadPoolExecutor(max_workers=16) as pool:
            inflight: set[asyncio.Future] = set()
            fault_at = time.monotonic() + seconds / 3
            done_fault: asyncio.Future | None = None
            deadline = time.monotonic() + seconds
            total = NOTIFY_RATE + BROADCAST_RATE
            while time.monotonic() < deadline or (done_fault and not done_fault.done()):
                if done_fault is None and time.monotonic() >= fault_at:
                    done_fault = loop.run_in_executor(
                        None, inject, fault, server, redis, db_url, readers, loop)
                await asyncio.sleep(random.expovariate(total))
                if random.uniform(0, total) < NOTIFY_RATE:
                    args = ("/bench/notify", {"n": 1, "users": [random.choice(users)],
                                              "size": 16})
                else:
                    args = ("/bench/broadcast", {"n": 1, "size": 16})
                future = loop.run_in_executor(pool, post, *args)
                inflight.add(future)
                future.add_done_callback(inflight.discard)
            did = await done_fault if done_fault else "-"
            if inflight:
                await asyncio.gather(*inflight)
        drained = await drain(log, readers)
        heads = log.heads()
        behind = [  # who did not catch up, as they stand (for a failed drain)
            {"user": c.user, "online": c.online.is_set(), "pending": sorted(c.pending),
             "cursor": c.cursor, "heads": {s: heads.get(s, 0) for s in c.streams},
             "connects": c.connects, "errors": c.errors[-3:]}
            for c in readers
            if not c.online.is_set() or any(c.cursor[s] < heads.get(s, 0) for s in c.streams)]
    finally:
        stop.set()
        for c in readers:
            if c.ws is not None:
                await c.ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    row: dict[str, Any] = {"fault": fault, "did": did, "drain_s": drained, **counts}
    totals = Counter()
    reconnects: list[float] = []
    for c in readers:
        want = log.expected(c)
        got = set(c.got)
        totals["expected"] += len(want)
        totals["received"] += sum(c.got.values())
        totals["missing"] += len(want - got)
        totals["duplicated"] += sum(n - 1 for n in c.got.values())
        totals["unexpected"] += len(got - want)
        totals["out_of_order"] += c.out_of_order
        totals["resets"] += c.resets
        totals["unavailable"] += c.unavailable
        reconnects += c.reconnect_s
    row.update(totals)
    row["errors"] = sum(len(c.errors) for c in readers)
    if behind:
        row["behind"] = behind
    row["reconnects"] = len(reconnects)
    row["reconnect_p50_s"] = round(statistics.median(reconnects), 2) if reconnects else None
    row["reconnect_max_s"] = round(max(reconnects), 2) if reconnects else None
    log.engine.dispose()
    return row


async def drain(log: Log, readers: list[Reader]) -> float:
    start = time.monotonic()
    while time.monotonic() - start < DRAIN_TIMEOUT:
        heads = log.heads()
        if all(c.online.is_set() and all(c.cursor[s] >= heads.get(s, 0) for s in c.streams)
               for c in readers):
            return round(time.monotonic() - start, 2)
        await asyncio.sleep(0.25)
    return float("nan")


def run_fault(fault: str, users: int, seconds: float, database: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"tidings-chaos-{fault}-"))
    redis = PrivateRedis(workdir)
    redis.start()
    drop = None
    extra = {"REDIS_URL": redis.url, "REALTIME_SWEEP_INTERVAL": "1"}
    if database == "postgresql":
        made = postgres_database()
        if made is None:
            redis.kill()
            shutil.rmtree(workdir, ignore_errors=True)
            return {"fault": fault, "did": "skipped: PostgreSQL unreachable"}
        db_url, drop = made
        extra["DATABASE_URL"] = db_url
    else:
        db_url = f"sqlite:///{workdir / 'bench.db'}"
    server = None
    try:
        server = start_tidings(workdir, users, workers=2, extra=extra)
        cookies = session_cookies(db_url, create_users(db_url, users, prefix="chaos"))
        row = asyncio.run(campaign_run(fault, server, redis, db_url, cookies, seconds))
        row["database"] = database
        row["log_problems"] = len(server.log_problems())
        if row.get("behind"):  # keep the evidence
            kept = Path(tempfile.gettempdir()) / f"tidings-chaos-{fault}-server.log"
            shutil.copy(server.log, kept)
            row["server_log"] = str(kept)
        return row
    finally:
        if server is not None:
            server.stop()
        redis.kill()
        if drop is not None:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)


COLUMNS = ("fault", "database", "expected", "received", "missing", "duplicated", "out_of_order",
           "unexpected", "resets", "published", "refused", "reconnects", "reconnect_p50_s",
           "reconnect_max_s", "drain_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0, help="traffic per fault")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown or not 0 < args.users <= 500 or not 3 <= args.seconds <= 120:
        parser.error(f"faults from {FAULTS}; --users in (0, 500]; --seconds in [3, 120]")
    random.seed(args.seed)
    rows = []
    for fault in faults:
        database = "postgresql" if fault == "db-kills" else "sqlite"
        print(f"== {fault} ({database}, {args.users} users, {args.seconds:g} s)", flush=True)
        row = run_fault(fault, args.users, args.seconds, database)
        print("   " + json.dumps(row), flush=True)
        rows.append(row)
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if r.get("missing") or r.get("duplicated") or r.get("unexpected")
           or r.get("out_of_order")]
    print("RESULT:", "FAIL" if bad else "OK", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
